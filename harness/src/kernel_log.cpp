#include "kernel_log.h"

namespace cowlab::harness::detail {
namespace {
bool contains(std::string_view s, std::string_view what) { return s.find(what) != std::string_view::npos; }
}  // namespace

std::string_view kmsg_message(std::string_view record) {
  if (!record.empty() && record.front() == ' ') return {};  // continuation (dictionary) line
  auto semi = record.find(';');
  if (semi == std::string_view::npos) return record;
  // Only treat it as a kmsg header if what precedes ';' looks like "prio,seq,ts,flags".
  for (char c : record.substr(0, semi))
    if (!(c == ',' || c == '-' || c == 'c' || c == '+' || (c >= '0' && c <= '9'))) return record;
  return record.substr(semi + 1);
}

KernelEvent classify_kernel_line(std::string_view raw) {
  std::string_view line = kmsg_message(raw);
  if (line.empty()) return KernelEvent::kNone;
  if (contains(line, "Kernel panic - not syncing")) return KernelEvent::kPanic;
  static constexpr std::string_view kSplats[] = {
      "BUG: ",           "Oops: ",         "Oops#",           "kernel BUG at",
      "WARNING: CPU: ",  "WARNING: at ",   "general protection fault",
      "Unable to handle kernel", "double fault:", "soft lockup -",
      "blocked for more than", "rcu_sched detected stall", "rcu: INFO: rcu_",
      "detected stalls on CPUs", "UBSAN: ",    "KASAN: ",        "KFENCE: ",
      "kernel stack overflow", "invalid opcode:",
  };
  for (auto s : kSplats)
    if (contains(line, s)) return KernelEvent::kSplat;
  return KernelEvent::kNone;
}

}  // namespace cowlab::harness::detail
