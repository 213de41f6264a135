// Quantities with their units, one format everywhere (scenario failure messages, matrix reports,
// progress lines):
// bytes as "64.0 MiB (67108864 B)", seconds as "1.25 s" or "12.5 ms", plain numbers as "%.4g".
#pragma once

#include <string>
#include <string_view>

namespace cowlab {

// `unit` is "bytes", "s" (seconds), "ratio" or "" (plain numbers).  Non-finite
// values print as "n/a".
std::string format_quantity(double value, std::string_view unit);

// "64.0 MiB" for 67108864: binary prefixes, one decimal, no exact-bytes suffix (chart ticks).
std::string format_bytes_short(double bytes);

// A duration for people: "42 s", "3 min 05 s", "1 h 02 min".
std::string format_duration_s(double seconds);

}  // namespace cowlab
