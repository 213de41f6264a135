// Unit tests of flake-aware verdicts (verdict.h) and `matrix compare` (compare.h) on hand-built
// results.  The guest paths (repeats in one guest, real matrices) are in tests/regress.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cowlab/harness/bisect.h"
#include "cowlab/harness/compare.h"
#include "cowlab/harness/verdict.h"

namespace cowlab::harness {
namespace {

using json = nlohmann::json;

json run(const std::string& scenario, const std::string& status, int n, double m = 0,
         const std::string& driver = "overlay") {
  json r = {{"scenario", scenario},
            {"driver", driver},
            {"profile", "p"},
            {"status", status},
            {"run", n},
            {"reason", ""},
            {"sweep", json::object()},
            {"duration_s", 1.0},
            {"measurements", {{"copy_up", m}}},
            {"units", {{"copy_up", "bytes"}}},
            {"failures", json::array()}};
  if (status == "fail")
    r["failures"].push_back(
        {{"expectation", "view c1:x content"}, {"expected", "a"}, {"observed", "b"}});
  return r;
}

std::vector<json> fold(const std::vector<json>& runs) {
  std::vector<std::string> in;
  for (const auto& r : runs) in.push_back(r.dump());
  std::vector<json> out;
  for (const auto& s : fold_runs(in)) out.push_back(json::parse(s));
  return out;
}

TEST(Verdict, AllPassIsPassWithMedianMinMax) {
  auto c = fold({run("a", "pass", 1, 30), run("a", "pass", 2, 10), run("a", "pass", 3, 20)});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0]["status"], "pass");
  // Only the outcomes that occurred are counted (no "skip": 0 beside them).
  EXPECT_EQ(c[0]["runs"], json({{"total", 3}, {"pass", 3}}));
  EXPECT_EQ(c[0]["measurements"]["copy_up"], 20);
  EXPECT_EQ(c[0]["measurement_stats"]["copy_up"]["min"], 10);
  EXPECT_EQ(c[0]["measurement_stats"]["copy_up"]["max"], 30);
  EXPECT_FALSE(c[0].contains("run"));
}

// A cell's image is where all its runs' images came from, not the first run's alone (which
// said "import" for a cell whose later runs were restored from its checkpoint).
TEST(Verdict, ImageSourcesAreCountedOverTheRuns) {
  std::vector<json> runs = {run("a", "pass", 1), run("a", "pass", 2), run("a", "pass", 3)};
  runs[0]["image"] = {{"source", "import"}, {"checkpoint", "saved"}, {"quiesce", "live"}};
  runs[1]["image"] = {{"source", "checkpoint"}, {"checkpoint", ""}, {"quiesce", ""}};
  runs[2]["image"] = {{"source", "checkpoint"}, {"checkpoint", ""}, {"quiesce", ""}};
  auto c = fold(runs);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0]["image"], json({{"sources", {{"import", 1}, {"checkpoint", 2}}},
                                 {"checkpoint", "saved"},
                                 {"quiesce", "live"}}));
  // A checkpoint that did not restore: that run imported and saved a new one.
  runs[1]["image"] = {
      {"source", "import"}, {"checkpoint", "saved (not restored: disk full)"}, {"quiesce", "live"}};
  c = fold(runs);
  EXPECT_EQ(c[0]["image"], json({{"sources", {{"import", 2}, {"checkpoint", 1}}},
                                 {"checkpoint", "saved; saved (not restored: disk full)"},
                                 {"quiesce", "live"}}));
  // A single run keeps its own image object as it is.
  EXPECT_EQ(fold({runs[0]})[0]["image"], runs[0]["image"]);
}

TEST(Verdict, TimesAndLayerTarsAreSummedOverTheRuns) {
  std::vector<json> runs = {run("a", "pass", 1), run("a", "pass", 2), run("a", "pass", 3)};
  for (size_t i = 0; i < runs.size(); ++i) {
    runs[i]["phases_s"] = {{"layers", 1.0 + static_cast<double>(i)}, {"steps", 0.5}};
    runs[i]["layer_tars"] = {{"built", i == 0 ? 2 : 0}, {"reused", i == 0 ? 0 : 2}};
  }
  auto c = fold(runs);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0]["duration_s"], 3.0);
  // Not the first run's figures: the cell's time went to all three.
  EXPECT_EQ(c[0]["phases_s"], json({{"layers", 6.0}, {"steps", 1.5}}));
  EXPECT_EQ(c[0]["layer_tars"], json({{"built", 2}, {"reused", 4}}));
}

TEST(Verdict, MixedIsFlakyWithCountsAndFailingRunsMessages) {
  auto c = fold({run("a", "pass", 1), run("a", "fail", 2), run("a", "pass", 3), run("a", "fail", 4),
                 run("a", "pass", 5)});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0]["status"], "flaky");
  EXPECT_EQ(pass_fraction(c[0].dump()), "3/5");
  ASSERT_EQ(c[0]["flaky_runs"].size(), 2u);
  EXPECT_NE(c[0]["flaky_runs"][0].get<std::string>().find(
                "run 2: fail; view c1:x content: expected a, observed b"),
            std::string::npos);
  // The cell keeps the first failing run's failures.
  EXPECT_EQ(c[0]["failures"].size(), 1u);
}

TEST(Verdict, AllFailIsFailAndWorstStatusWins) {
  EXPECT_EQ(fold({run("a", "fail", 1), run("a", "fail", 2)})[0]["status"], "fail");
  EXPECT_EQ(fold({run("a", "fail", 1), run("a", "fail", 2)})[0]["runs"],
            json({{"total", 2}, {"fail", 2}}));
  EXPECT_EQ(fold({run("a", "pass", 1), run("a", "fail", 2)})[0]["runs"],
            json({{"total", 2}, {"pass", 1}, {"fail", 1}}));
  EXPECT_EQ(fold({run("a", "fail", 1), run("a", "timeout", 2)})[0]["status"], "timeout");
  EXPECT_EQ(fold({run("a", "skip", 1), run("a", "skip", 2)})[0]["status"], "skip");
  // A failure rerun (--rerun-failures) that passed makes the cell flaky, not pass.
  json rerun = run("a", "pass", 2);
  rerun["rerun"] = true;
  EXPECT_EQ(fold({run("a", "fail", 1), rerun})[0]["status"], "flaky");
}

TEST(Verdict, CellsAreKeptApartAndSingleRunsPassThrough) {
  json single = run("b", "fail", 1);
  single.erase("run");
  auto c = fold({run("a", "pass", 1), single, run("a", "pass", 2, 0, "vfs"), run("a", "fail", 2)});
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0]["scenario"], "a");
  EXPECT_EQ(c[0]["status"], "flaky");
  EXPECT_EQ(c[1]["status"], "fail");
  EXPECT_EQ(c[1]["runs"]["total"], 1);
  EXPECT_EQ(c[2]["driver"], "vfs");
}

// A cell whose outcome is a seeded coin flip per run: folded, it is flaky, and `compare`
// against a passing baseline calls it "became-flaky", never a regression.
// A resumed matrix folds its kept cells again with the new runs (matrix.cpp): a folded flaky cell
// must stay 2/3, and interrupted cells (one per sweep point) must not merge into one.
TEST(Verdict, FoldedAndInterruptedCellsPassThroughARefold) {
  auto first = fold({run("a", "pass", 1), run("a", "fail", 2), run("a", "pass", 3)});
  ASSERT_EQ(first.size(), 1u);
  json gone = {{"scenario", "b"},          {"driver", "overlay"},
               {"profile", "p"},           {"status", "interrupted"},
               {"sweep", json::object()},  {"measurements", json::object()},
               {"failures", json::array()}};
  auto again = fold({first[0], gone, gone});
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again[0], first[0]);
  EXPECT_EQ(again[0]["runs"]["total"], 3);
  EXPECT_EQ(again[1]["status"], "interrupted");
  EXPECT_EQ(again[2]["status"], "interrupted");
}

TEST(Verdict, SeededCoinFlipIsFlakyNeverARegression) {
  std::mt19937 coin(20261201);
  std::vector<json> runs;
  int heads = 0;
  for (int i = 1; i <= 8; ++i) {
    bool h = coin() % 2;
    heads += h;
    runs.push_back(run("coin", h ? "pass" : "fail", i));
  }
  ASSERT_GT(heads, 0);
  ASSERT_LT(heads, 8);  // the seed gives mixed outcomes
  auto cell = fold(runs);
  ASSERT_EQ(cell[0]["status"], "flaky");
  MatrixReport base, cand;
  base.profiles = cand.profiles = {{"p", "6.1", {}, ""}};
  json b = run("coin", "pass", 1);
  b.erase("run");
  base.results = fold_runs({b.dump()});
  cand.results = {cell[0].dump()};
  auto c = compare_reports(base, cand, {});
  ASSERT_TRUE(c.ok()) << c.error().message();
  ASSERT_EQ(c->cells.size(), 1u);
  EXPECT_EQ(c->cells[0].kind, "became-flaky");
  EXPECT_EQ(c->regressions(), 0);
}

// ---- compare ------------------------------------------------------------------------------

MatrixReport report(const std::vector<json>& cells, const std::string& profile = "p") {
  MatrixReport r;
  r.profiles = {{profile, "6.1.0-x", {}, "tcg"}};
  r.drivers = {"overlay"};
  for (auto c : cells) {
    c["profile"] = profile;
    c.erase("run");
    r.results.push_back(c.dump());
  }
  return r;
}

json flaky(const std::string& scenario) {
  json c = run(scenario, "flaky", 1);
  c["runs"] = {{"total", 3}, {"pass", 2}, {"fail", 1}};
  return c;
}

TEST(Compare, EveryTransition) {
  json skip_new = run("to-skip", "skip", 1);
  skip_new["reason"] = "needs kernel feature x";
  auto base =
      report({run("p2f", "pass", 1), run("f2p", "fail", 1), run("p2fl", "pass", 1), flaky("fl2p"),
              run("f2fl", "fail", 1), flaky("fl2f"), run("s2f", "skip", 1),
              run("f2panic", "fail", 1), run("to-skip", "pass", 1), run("from-skip", "skip", 1),
              run("gone", "pass", 1), run("same", "pass", 1), run("samefail", "fail", 1)});
  auto cand = report(
      {run("p2f", "fail", 1), run("f2p", "pass", 1), flaky("p2fl"), run("fl2p", "pass", 1),
       flaky("f2fl"), run("fl2f", "fail", 1), run("s2f", "fail", 1), run("f2panic", "panic", 1),
       skip_new, run("from-skip", "pass", 1), run("new", "pass", 1), run("newfail", "error", 1),
       run("same", "pass", 1), run("samefail", "fail", 1)});
  auto c = compare_reports(base, cand, {});
  ASSERT_TRUE(c.ok()) << c.error().message();
  std::map<std::string, std::string> kind;
  for (const auto& ch : c->cells) kind[ch.scenario] = ch.kind;
  EXPECT_EQ(kind["p2f"], "regression");
  EXPECT_EQ(kind["f2p"], "fix");
  EXPECT_EQ(kind["p2fl"], "became-flaky");
  EXPECT_EQ(kind["fl2p"], "no-longer-flaky");
  EXPECT_EQ(kind["f2fl"], "partial-fix");
  EXPECT_EQ(kind["fl2f"], "regression");
  EXPECT_EQ(kind["s2f"], "regression");
  EXPECT_EQ(kind["f2panic"], "regression");
  EXPECT_EQ(kind["to-skip"], "now-skipped");
  EXPECT_EQ(kind["from-skip"], "no-longer-skipped");
  EXPECT_EQ(kind["gone"], "disappeared");
  EXPECT_EQ(kind["new"], "appeared");
  EXPECT_EQ(kind["newfail"], "regression");
  EXPECT_FALSE(kind.count("same"));
  EXPECT_FALSE(kind.count("samefail"));
  EXPECT_EQ(c->unchanged_cells, 2);
  EXPECT_EQ(c->regressions(), 5);
  std::string text = c->text();
  EXPECT_NE(text.find("REGRESSIONS (5)"), std::string::npos) << text;
  EXPECT_NE(text.find("flaky 2/3"), std::string::npos) << text;
  auto doc = json::parse(c->json());
  EXPECT_EQ(doc["regressions"], 5);
}

TEST(Compare, SizesBeyondTenPercentAnd64KiB) {
  const double MiB = 1 << 20;
  auto base = report(
      {run("a", "pass", 1, 10 * MiB), run("b", "pass", 1, 100e3), run("c", "pass", 1, 10 * MiB)});
  // a: +20 % (2 MiB) -> worse; b: +50 % but only 50 kB -> within; c: -20 % -> better.
  auto cand = report(
      {run("a", "pass", 1, 12 * MiB), run("b", "pass", 1, 150e3), run("c", "pass", 1, 8 * MiB)});
  auto c = compare_reports(base, cand, {});
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->measurements.size(), 2u);
  EXPECT_EQ(c->measurements[0].scenario, "a");
  EXPECT_EQ(c->measurements[0].kind, "worse");
  EXPECT_TRUE(c->measurements[0].regression);
  EXPECT_EQ(c->measurements[1].scenario, "c");
  EXPECT_EQ(c->measurements[1].kind, "better");
  EXPECT_EQ(c->regressions(), 1);
  // --tolerance copy_up=30%,64KiB accepts the 20 % growth; without the floor, b's 50 kB (+50 %)
  // is reported.
  CompareOptions o;
  o.tolerances["copy_up"] = *parse_tolerance("30%,64KiB");
  EXPECT_EQ(compare_reports(base, cand, o)->measurements.size(), 0u);
  o.tolerances["copy_up"] = *parse_tolerance("30%");
  ASSERT_EQ(compare_reports(base, cand, o)->measurements.size(), 1u);
  EXPECT_EQ(compare_reports(base, cand, o)->measurements[0].scenario, "b");
  o.tolerances.clear();
  o.tolerances["bytes"] = *parse_tolerance("ignore");
  EXPECT_EQ(compare_reports(base, cand, o)->measurements.size(), 0u);
}

json timed(const std::string& scenario, double median, double min, double max) {
  json r = run(scenario, "pass", 1);
  r["measurements"] = {{"t", median}};
  r["units"] = {{"t", "s"}};
  r["measurement_stats"] = {{"t", {{"median", median}, {"min", min}, {"max", max}, {"n", 3}}}};
  return r;
}

TEST(Compare, TimesBeyondTwiceAndOutsideBothRanges) {
  // a: 3x and ranges apart -> worse; b: 3x but the baseline's max reaches the new median;
  // c: 1.5x -> within; d: 3x of 10 ms (below the 50 ms floor) -> within.
  auto base = report({timed("a", 1.0, 0.9, 1.1), timed("b", 1.0, 0.5, 3.2),
                      timed("c", 1.0, 1.0, 1.0), timed("d", 0.01, 0.01, 0.01)});
  auto cand = report({timed("a", 3.0, 2.8, 3.3), timed("b", 3.0, 2.9, 3.1),
                      timed("c", 1.5, 1.5, 1.5), timed("d", 0.03, 0.03, 0.03)});
  auto c = compare_reports(base, cand, {});
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->measurements.size(), 1u);
  EXPECT_EQ(c->measurements[0].scenario, "a");
  EXPECT_EQ(c->measurements[0].kind, "worse");
  CompareOptions o;
  o.tolerances["t"] = *parse_tolerance("1.2x");
  c = compare_reports(base, cand, o);
  // a, c and d (an explicit tolerance has no floor); b's baseline range still holds the new median.
  EXPECT_EQ(c->measurements.size(), 3u);
}

// A time is judged on each side's spread: with a single run on a side (no min-max to speak
// of), a time beyond 2x is reported as worse but is not a regression.  Two real runs of one
// profile on a loaded TCG host moved create times 3x (151 ms -> 448 ms) between a single run
// and three.
TEST(Compare, TimesFromASingleRunAreReportedNotCounted) {
  json once = run("a", "pass", 1);
  once["measurements"] = {{"t", 0.15}};
  once["units"] = {{"t", "s"}};
  auto base = report({once});
  auto cand = report({timed("a", 0.45, 0.44, 0.46)});
  auto c = compare_reports(base, cand, {});
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->measurements.size(), 1u);
  EXPECT_EQ(c->measurements[0].kind, "worse");
  EXPECT_FALSE(c->measurements[0].regression);
  EXPECT_NE(c->measurements[0].note.find("base 1, candidate 3"), std::string::npos)
      << c->measurements[0].note;
  EXPECT_EQ(c->regressions(), 0);
  EXPECT_NE(c->text().find("not counted"), std::string::npos);
  // Three runs on both sides: the same move is a regression.
  c = compare_reports(report({timed("a", 0.15, 0.14, 0.16)}), cand, {});
  ASSERT_EQ(c->measurements.size(), 1u);
  EXPECT_TRUE(c->measurements[0].regression);
  EXPECT_EQ(c->regressions(), 1);
  // Sizes are not timings: one run each is enough to count.
  const double MiB = 1 << 20;
  EXPECT_EQ(compare_reports(report({run("b", "pass", 1, 10 * MiB)}),
                            report({run("b", "pass", 1, 12 * MiB)}), {})
                ->regressions(),
            1);
}

TEST(Compare, Tolerances) {
  EXPECT_DOUBLE_EQ(parse_tolerance("10%")->relative, 0.10);
  EXPECT_DOUBLE_EQ(parse_tolerance("10%,64KiB")->absolute, 65536);
  EXPECT_DOUBLE_EQ(parse_tolerance("2x,0.05")->absolute, 0.05);
  EXPECT_DOUBLE_EQ(parse_tolerance("3x")->factor, 3);
  EXPECT_TRUE(parse_tolerance("ignore")->ignore);
  for (const char* bad : {"", "10", "x", "0%", "0.5x", "10%,abc", "10%,1,2", "-5%"}) {
    auto t = parse_tolerance(bad);
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_EQ(t.error().kind(), ErrorKind::kUsage);
    EXPECT_NE(t.error().message().find(std::string("\"") + bad + "\""), std::string::npos)
        << t.error().message();
  }
}

TEST(Compare, ProfilesOfOneMatrix) {
  MatrixReport m;
  m.profiles = {{"a", "6.1", {}, ""}, {"b", "6.12", {}, ""}};
  for (auto [p, st] : {std::pair{"a", "pass"}, {"b", "fail"}}) {
    json r = run("x", st, 1);
    r.erase("run");
    r["profile"] = p;
    m.results.push_back(r.dump());
  }
  CompareOptions o;
  o.base_profile = "a";
  o.new_profile = "b";
  auto c = compare_reports(m, m, o);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->cells.size(), 1u);
  EXPECT_EQ(c->cells[0].kind, "regression");
  EXPECT_EQ(c->cells[0].profile_base, "a");
  EXPECT_EQ(c->cells[0].profile_new, "b");
  o.new_profile = "nope";
  auto bad = compare_reports(m, m, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("\"nope\""), std::string::npos);
  // Several profiles on both sides that differ, none chosen: a usage error, not a guess.
  MatrixReport other = m;
  other.profiles[1].name = "c";
  EXPECT_EQ(compare_reports(m, other, {}).error().kind(), ErrorKind::kUsage);
}

}  // namespace
}  // namespace cowlab::harness

namespace cowlab::harness {
namespace {

// ---- bisection -----------------------------------------------------------------------------

TEST(Bisect, ClassifyOnlyUnanimousRuns) {
  auto cell = [](const std::string& st, int pass, int total, const std::string& reason = "") {
    json c = {{"status", st},
              {"reason", reason},
              {"runs", {{"total", total}, {"pass", pass}}},
              {"failures", json::array()}};
    if (st != "pass" && st != "flaky") c["runs"][st] = total - pass;
    return c.dump();
  };
  std::string why;
  EXPECT_EQ(classify_cell(cell("pass", 3, 3), "pass", "fail", &why), StepVerdict::kOld);
  EXPECT_EQ(classify_cell(cell("fail", 0, 3), "pass", "fail", &why), StepVerdict::kNew);
  EXPECT_EQ(classify_cell(cell("flaky", 2, 3), "pass", "fail", &why), StepVerdict::kSkip);
  EXPECT_NE(why.find("flaky: 2/3"), std::string::npos) << why;
  EXPECT_EQ(classify_cell(cell("skip", 0, 3, "needs kernel feature x"), "pass", "fail", &why),
            StepVerdict::kSkip);
  EXPECT_EQ(classify_cell(cell("panic", 0, 3), "pass", "fail", &why), StepVerdict::kSkip);
  EXPECT_NE(why.find("neither"), std::string::npos) << why;
  EXPECT_EQ(classify_cell(cell("error", 0, 1, "guest failed before this scenario ran: hang"),
                          "pass", "error", &why),
            StepVerdict::kSkip);
  EXPECT_NE(why.find("did not boot"), std::string::npos) << why;
  // A fix bisection: the old outcome is the failing one.
  EXPECT_EQ(classify_cell(cell("pass", 3, 3), "fail", "pass", &why), StepVerdict::kNew);
  // fail in some runs and timeout in others: not unanimous.
  json mixed = {{"status", "timeout"}, {"runs", {{"total", 3}, {"fail", 2}, {"timeout", 1}}}};
  EXPECT_EQ(classify_cell(mixed.dump(), "pass", "timeout", &why), StepVerdict::kSkip);
}

TEST(Bisect, SearchFindsTheFirstNewPointPassingOverSkips) {
  // 16 points, the change at 11, points 5..9 unbuildable/flaky (skip).
  for (size_t change : {1u, 7u, 11u, 15u}) {
    int calls = 0;
    auto r = search_first_new(16, [&](size_t i) -> Result<StepVerdict> {
      ++calls;
      if (i >= 5 && i <= 9 && i != change) return StepVerdict::kSkip;
      return i >= change ? StepVerdict::kNew : StepVerdict::kOld;
    });
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->first_new, change);
    EXPECT_EQ(r->last_old, change == 11 ? 10u : change == 7 ? 4u : change - 1) << change;
    // change 7: 5 and 6 are skipped, so 7 cannot be told apart from them.
    EXPECT_EQ(r->ambiguous, change == 7) << change;
    EXPECT_LE(calls, 10);
  }
  // Every point between the ends skipped: ambiguous over all of them.
  auto all = search_first_new(5, [](size_t) -> Result<StepVerdict> { return StepVerdict::kSkip; });
  EXPECT_TRUE(all->ambiguous);
  EXPECT_EQ(all->last_old, 0u);
  EXPECT_EQ(all->first_new, 4u);
  EXPECT_FALSE(
      search_first_new(1, [](size_t) -> Result<StepVerdict> { return StepVerdict::kOld; }).ok());
}

}  // namespace
}  // namespace cowlab::harness
