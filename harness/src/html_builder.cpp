#include "html_builder.h"

#include <cmath>
#include <cstdio>
#include <set>
#include <stdexcept>

namespace cowlab::harness::html {

namespace {
// HTML void elements: no end tag.  SVG elements (lower-case names not listed here) with no
// children self-close.
const std::set<std::string> kVoid = {"meta", "br", "hr", "img", "input", "link", "col", "wbr"};
const std::set<std::string> kSvg = {"svg",  "g",    "line", "polyline", "polygon", "circle",
                                    "rect", "text", "path", "title",    "tspan"};
}  // namespace

std::string escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        // Control characters (a guest console has them) are not allowed in HTML text.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t')
          o += ' ';
        else
          o += c;
    }
  }
  return o;
}

std::string number(double v) {
  if (!std::isfinite(v)) return "0";
  char b[32];
  if (v == std::round(v) && std::fabs(v) < 1e15)
    std::snprintf(b, sizeof b, "%.0f", v);
  else
    std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

Node Node::element(std::string tag, Attrs attrs, std::vector<Node> children) {
  Node n;
  n.tag_ = std::move(tag);
  n.attrs_ = std::move(attrs);
  n.children_ = std::move(children);
  return n;
}

Node Node::text(std::string t) {
  Node n;
  n.kind_ = Kind::kText;
  n.tag_ = std::move(t);
  return n;
}

Node Node::css(std::string css) {
  if (css.find("</") != std::string::npos)
    throw std::invalid_argument("style sheet text contains \"</\"");
  Node n;
  n.kind_ = Kind::kCss;
  n.tag_ = std::move(css);
  return n;
}

Node& Node::attr(std::string name, std::string value) {
  attrs_.emplace_back(std::move(name), std::move(value));
  return *this;
}

Node& Node::attr(std::string name, double value) {
  return attr(std::move(name), number(value));
}

Node& Node::add(Node child) {
  children_.push_back(std::move(child));
  return *this;
}

Node& Node::add(std::vector<Node> children) {
  for (auto& c : children) children_.push_back(std::move(c));
  return *this;
}

void Node::render_to(std::string& out) const {
  if (kind_ == Kind::kText) {
    out += escape(tag_);
    return;
  }
  if (kind_ == Kind::kCss) {
    out += tag_;
    return;
  }
  out += "<" + tag_;
  for (const auto& [k, v] : attrs_) out += " " + k + "=\"" + escape(v) + "\"";
  if (children_.empty() && kVoid.count(tag_)) {
    out += ">";
    return;
  }
  if (children_.empty() && kSvg.count(tag_) && tag_ != "svg") {
    out += "/>";
    return;
  }
  out += ">";
  for (const auto& c : children_) c.render_to(out);
  out += "</" + tag_ + ">";
}

std::string Node::render() const {
  std::string out;
  render_to(out);
  return out;
}

}  // namespace cowlab::harness::html
