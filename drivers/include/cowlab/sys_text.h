// Text of the system seam: the output of programs cowlab runs and files of /proc, as lines.
// No system calls; header-only, so that a parser needs nothing else.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace cowlab::sys {

// The lines of `text` (a file read whole, a program's output) without their '\n': "a\n\nb"
// is "a", "", "b"; a last line without '\n' counts; "" has none.
inline std::vector<std::string> split_lines(std::string_view text) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    lines.emplace_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return lines;
}

}  // namespace cowlab::sys
