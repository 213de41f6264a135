// Recognising kernel trouble in console and /dev/kmsg lines.  Internal to harness/.
#pragma once

#include <string_view>

namespace cowlab::harness::detail {

enum class KernelEvent { kNone, kPanic, kSplat };

// Classifies one line of kernel output: kPanic for "Kernel panic - not syncing", kSplat for an
// oops, BUG, WARNING, general protection fault, soft lockup, hung task, RCU stall, KASAN/UBSAN
// report; kNone otherwise.  Accepts console lines ("[    1.234] msg") and /dev/kmsg records
// ("4,123,456,-;msg"); kmsg continuation lines (" KEY=value") are kNone.
KernelEvent classify_kernel_line(std::string_view line);

// The message part of a /dev/kmsg record ("4,123,456,-;msg" -> "msg").
std::string_view kmsg_message(std::string_view record);

}  // namespace cowlab::harness::detail
