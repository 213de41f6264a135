#include "src/html_builder.h"

#include <gtest/gtest.h>

#include <cmath>

namespace cowlab::harness::html {
namespace {

TEST(HtmlBuilder, EscapesTextAndAttributes) {
  Node n =
      el("td", {{"title", "a \"quoted\" <b> & 'x'"}}, {text("<script>alert(1)</script> & co")});
  EXPECT_EQ(n.render(),
            "<td title=\"a &quot;quoted&quot; &lt;b&gt; &amp; "
            "&#39;x&#39;\">&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</td>");
}

TEST(HtmlBuilder, ControlCharactersBecomeSpaces) {
  EXPECT_EQ(escape("a\x1b[0mb\x07\n"), "a [0mb \n");
}

TEST(HtmlBuilder, VoidSvgAndNormalElements) {
  EXPECT_EQ(el("meta", {{"charset", "utf-8"}}).render(), "<meta charset=\"utf-8\">");
  EXPECT_EQ(el("circle", {{"r", "3"}}).render(), "<circle r=\"3\"/>");
  EXPECT_EQ(el("div").render(), "<div></div>");
  EXPECT_EQ(el("svg").render(), "<svg></svg>");
  Node p = el("p");
  p.add(text("a")).add(el("b", {}, {text("b")}));
  p.attr("x", 12.0).attr("y", 2.5);
  EXPECT_EQ(p.render(), "<p x=\"12\" y=\"2.5\">a<b>b</b></p>");
}

TEST(HtmlBuilder, StyleSheetsCannotCloseTheirElement) {
  EXPECT_EQ(el("style", {}, {Node::css("td{color:red}")}).render(), "<style>td{color:red}</style>");
  EXPECT_THROW(Node::css("x</style><script>"), std::invalid_argument);
}

TEST(HtmlBuilder, Numbers) {
  EXPECT_EQ(number(12), "12");
  EXPECT_EQ(number(-3), "-3");
  EXPECT_EQ(number(0.125), "0.125");
  EXPECT_EQ(number(1.0 / 3), "0.333333");
  EXPECT_EQ(number(NAN), "0");
}

}  // namespace
}  // namespace cowlab::harness::html
