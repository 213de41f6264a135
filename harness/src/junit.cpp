#include "junit.h"

#include <libxml/xmlwriter.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include "cowlab/fs.h"
#include "cowlab/harness/verdict.h"
#include "cowlab/units.h"

namespace cowlab::harness::detail {

namespace {

using json = nlohmann::json;

// A sweep value as a sortable key: sizes and numbers by value, anything else as text after them.
std::pair<double, std::string> sweep_key(const json& v) {
  std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  if (auto n = parse_size(s); n.ok()) return {static_cast<double>(*n), ""};
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (end && *end == 0 && !s.empty()) return {d, ""};
  return {INFINITY, s};
}

std::vector<std::pair<double, std::string>> sweep_keys(const json& r) {
  std::vector<std::pair<double, std::string>> out;
  if (r.contains("sweep") && r["sweep"].is_object())
    for (auto& [k, v] : r["sweep"].items()) out.push_back(sweep_key(v));
  return out;
}

std::string decimal(double v) {
  char b[48];
  std::snprintf(b, sizeof b, "%.3f", std::isfinite(v) && v > 0 ? v : 0.0);
  return b;
}

// libxml2's text writer: escaping, encoding and well-formedness are its job, not ours.
class XmlWriter {
 public:
  XmlWriter() : buf_(xmlBufferCreate()), w_(xmlNewTextWriterMemory(buf_, 0)) {
    xmlTextWriterSetIndent(w_, 1);
    xmlTextWriterSetIndentString(w_, BAD_CAST "  ");
    ok_ = xmlTextWriterStartDocument(w_, nullptr, "UTF-8", nullptr) >= 0;
  }
  ~XmlWriter() {
    if (w_) xmlFreeTextWriter(w_);
    xmlBufferFree(buf_);
  }
  void start(const char* name) { ok_ &= xmlTextWriterStartElement(w_, BAD_CAST name) >= 0; }
  void attr(const char* name, const std::string& value) {
    ok_ &= xmlTextWriterWriteAttribute(w_, BAD_CAST name, BAD_CAST clean(value).c_str()) >= 0;
  }
  void text(const std::string& value) {
    ok_ &= xmlTextWriterWriteString(w_, BAD_CAST clean(value).c_str()) >= 0;
  }
  void end() { ok_ &= xmlTextWriterEndElement(w_) >= 0; }
  Result<std::string> finish() {
    ok_ &= xmlTextWriterEndDocument(w_) >= 0;
    xmlFreeTextWriter(w_);  // flushes into buf_
    w_ = nullptr;
    if (!ok_) return Error(ErrorKind::kSystem, "junit.xml: libxml2 text writer failed");
    return std::string(reinterpret_cast<const char*>(xmlBufferContent(buf_)),
                       xmlBufferLength(buf_));
  }

 private:
  // XML 1.0 cannot carry most control characters (a guest console has plenty), and the writer
  // expects UTF-8: replace what is not allowed.
  static std::string clean(const std::string& s) {
    std::string o;
    o.reserve(s.size());
    for (unsigned char c : s)
      o += (c < 0x20 && c != '\n' && c != '\t' && c != '\r') ? ' ' : static_cast<char>(c);
    return o;
  }
  xmlBufferPtr buf_;
  xmlTextWriterPtr w_;
  bool ok_ = true;
};

std::string case_name(const json& r) {
  std::string name = r.value("scenario", "?");
  std::string sw = sweep_label(r);
  return sw.empty() ? name : name + "[" + sw + "]";
}

std::string expectation_text(const json& f) {
  return f.value("expectation", "") + ": expected " + f.value("expected", "") + ", observed " +
         f.value("observed", "");
}

}  // namespace

std::string sweep_label(const json& r) {
  std::string s;
  if (r.contains("sweep") && r["sweep"].is_object())
    for (auto& [k, v] : r["sweep"].items())
      s += (s.empty() ? "" : ",") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  return s;
}

std::string measurement_unit(const json& r, const std::string& name) {
  if (r.contains("units") && r["units"].is_object() && r["units"].contains(name) &&
      r["units"][name].is_string())
    return r["units"][name].get<std::string>();
  return "";
}

void sort_results(std::vector<json>& rs) {
  std::stable_sort(rs.begin(), rs.end(), [](const json& a, const json& b) {
    return std::make_tuple(a.value("scenario", ""), a.value("profile", ""), a.value("driver", ""),
                           sweep_keys(a)) < std::make_tuple(b.value("scenario", ""),
                                                            b.value("profile", ""),
                                                            b.value("driver", ""), sweep_keys(b));
  });
}

Result<std::string> junit_xml(const MatrixReport& rep, const std::vector<json>& rs) {
  std::map<std::string, std::vector<const json*>> by_profile;
  for (const auto& r : rs) by_profile[r.value("profile", "host")].push_back(&r);
  struct Counts {
    int tests = 0, failures = 0, errors = 0, skipped = 0;
    double time = 0;
    void add(const json& r) {
      ++tests;
      std::string st = r.value("status", "error");
      if (st == "fail")
        ++failures;
      else if (st == "skip")
        ++skipped;
      else if (st != "pass")
        if (st != "flaky") ++errors;  // error, timeout, panic, interrupted
      time += r.value("duration_s", 0.0);
    }
  };
  Counts all;
  for (const auto& r : rs) all.add(r);

  XmlWriter x;
  x.start("testsuites");
  x.attr("name", "cowlab matrix");
  x.attr("tests", std::to_string(all.tests));
  x.attr("failures", std::to_string(all.failures));
  x.attr("errors", std::to_string(all.errors));
  x.attr("time", decimal(rep.wall_seconds));
  for (const auto& [profile, list] : by_profile) {
    Counts c;
    for (const auto* r : list) c.add(*r);
    x.start("testsuite");
    x.attr("name", profile);
    x.attr("tests", std::to_string(c.tests));
    x.attr("failures", std::to_string(c.failures));
    x.attr("errors", std::to_string(c.errors));
    x.attr("skipped", std::to_string(c.skipped));
    x.attr("time", decimal(c.time));
    x.attr("timestamp", rep.started_utc);
    x.attr("hostname", rep.hostname);
    x.start("properties");
    auto property = [&](const std::string& name, const std::string& value) {
      x.start("property");
      x.attr("name", name);
      x.attr("value", value);
      x.end();
    };
    property("cowlab_version", rep.cowlab_version);
    for (const auto& p : rep.profiles)
      if (p.name == profile) {
        property("kernel_release", p.kernel_release);
        property("accel", p.accel);
      }
    for (const auto* r : list) {
      // JUnit has no flaky outcome, and the Jenkins schema allows no properties in a testcase:
      // a flaky cell is a passing testcase, its passes/runs a suite property (its failing runs
      // are in its system-out).
      if (r->value("status", "") == "flaky")
        property(r->value("driver", "") + "/" + case_name(*r) + "/flaky", pass_fraction(r->dump()));
      if (!r->contains("measurements") || !(*r)["measurements"].is_object()) continue;
      for (auto& [k, v] : (*r)["measurements"].items())
        property(r->value("driver", "") + "/" + case_name(*r) + "/" + k,
                 format_quantity(v.is_number() ? v.get<double>() : NAN, measurement_unit(*r, k)));
    }
    x.end();  // properties
    for (const auto* r : list) {
      x.start("testcase");
      x.attr("name", case_name(*r));
      x.attr("classname", profile + "." + r->value("driver", ""));
      x.attr("time", decimal(r->value("duration_s", 0.0)));
      std::string st = r->value("status", "error");
      if (st == "fail") {
        const json& fs = r->contains("failures") ? (*r)["failures"] : json::array();
        std::string text;
        for (const auto& f : fs) text += expectation_text(f) + "\n";
        x.start("failure");
        x.attr("type", "fail");
        x.attr("message", fs.empty() ? r->value("reason", "failed") : expectation_text(fs[0]));
        x.text(text);
        x.end();
      } else if (st == "skip") {
        x.start("skipped");
        x.attr("message", r->value("reason", ""));
        x.end();
      } else if (st != "pass" && st != "flaky") {
        x.start("error");
        x.attr("type", st);
        x.attr("message", r->value("reason", st));
        x.text(r->value("reason", st));
        x.end();
      }
      std::string console = r->value("console_excerpt", "");
      if (st == "flaky") {
        std::string runs = "flaky: passed " + pass_fraction(r->dump()) + " runs\n";
        for (const auto& line : r->value("flaky_runs", json::array()))
          runs += (line.is_string() ? line.get<std::string>() : line.dump()) + "\n";
        console = runs + console;
      }
      if (!console.empty()) {
        x.start("system-out");
        x.text(console);
        x.end();
      }
      x.end();  // testcase
    }
    x.end();  // testsuite
  }
  x.end();  // testsuites
  return x.finish();
}

}  // namespace cowlab::harness::detail
