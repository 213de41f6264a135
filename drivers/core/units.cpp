#include "cowlab/units.h"

#include <cmath>
#include <cstdio>

namespace cowlab {

std::string format_bytes_short(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = bytes;
  int u = 0;
  while (std::fabs(v) >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char b[48];
  if (u == 0)
    std::snprintf(b, sizeof b, "%.0f B", v);
  else
    std::snprintf(b, sizeof b, "%.1f %s", v, kUnits[u]);
  return b;
}

std::string format_quantity(double value, std::string_view unit) {
  if (!std::isfinite(value)) return "n/a";
  char b[96];
  if (unit == "bytes") {
    std::string s = format_bytes_short(value);
    if (std::fabs(value) < 1024) return s;
    std::snprintf(b, sizeof b, "%s (%.0f B)", s.c_str(), value);
    return b;
  }
  if (unit == "s") {
    if (std::fabs(value) < 1)
      std::snprintf(b, sizeof b, "%.3g ms", value * 1000);
    else if (std::fabs(value) < 100)
      std::snprintf(b, sizeof b, "%.2f s", value);
    else
      std::snprintf(b, sizeof b, "%.1f s", value);
    return b;
  }
  std::snprintf(b, sizeof b, "%.4g", value);
  return std::string(b) + (unit.empty() || unit == "ratio" ? "" : " " + std::string(unit));
}

std::string format_duration_s(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = std::lround(seconds);
  char b[48];
  if (s < 60)
    std::snprintf(b, sizeof b, "%ld s", s);
  else if (s < 3600)
    std::snprintf(b, sizeof b, "%ld min %02ld s", s / 60, s % 60);
  else
    std::snprintf(b, sizeof b, "%ld h %02ld min", s / 3600, (s % 3600) / 60);
  return b;
}

}  // namespace cowlab
