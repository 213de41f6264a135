// A small builder for HTML and inline SVG: elements with attributes and children, and text.
// render() escapes every text node and attribute value (& < > " '), so report code never
// concatenates markup and a scenario name like "<b>&" cannot break the page.  Elements without
// children render as <tag .../> for SVG and as <tag></tag> for HTML (void HTML elements such as
// <meta> render without an end tag).  html_builder_test.cpp covers escaping and nesting.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace cowlab::harness::html {

class Node {
 public:
  using Attrs = std::vector<std::pair<std::string, std::string>>;

  // An element: el("td", {{"class", "c pass"}}, {text("pass")}).
  static Node element(std::string tag, Attrs attrs = {}, std::vector<Node> children = {});
  // A text node (escaped).
  static Node text(std::string text);
  // Style sheet text for <style>: not escaped (CSS has no entities), but "</" is refused.
  static Node css(std::string css);

  Node& attr(std::string name, std::string value);
  Node& attr(std::string name, double value);  // shortest round-trip-free form: 12, 12.5
  Node& add(Node child);
  Node& add(std::vector<Node> children);
  bool empty() const { return kind_ == Kind::kElement && children_.empty(); }

  std::string render() const;
  void render_to(std::string& out) const;

 private:
  enum class Kind { kElement, kText, kCss };
  Kind kind_ = Kind::kElement;
  std::string tag_;  // or the text
  Attrs attrs_;
  std::vector<Node> children_;
};

inline Node el(std::string tag, Node::Attrs attrs = {}, std::vector<Node> children = {}) {
  return Node::element(std::move(tag), std::move(attrs), std::move(children));
}
inline Node text(std::string t) {
  return Node::text(std::move(t));
}

// Escapes & < > " ' (for attribute values and text alike).
std::string escape(const std::string& s);
// "12" for 12.0, "12.5", "0.333": numbers for SVG coordinates and labels.
std::string number(double v);

}  // namespace cowlab::harness::html
