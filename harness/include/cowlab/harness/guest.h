// Disposable QEMU guests.
//
// run_guest() boots a profile in a throwaway guest, runs one command in it and returns what
// happened.  The guest:
//   - boots the profile's kernel with its busybox initramfs, to which the harness appends a
//     per-run cpio holding the guest agent, the command and the payload files (no network, no
//     9p: nothing else crosses into the guest);
//   - runs on the profile's root disk opened with snapshot=on (the base image is never written)
//     and on fresh sparse scratch disks that are deleted when the guest ends;
//   - streams the command's stdout and stderr, structured records (JSON lines the command writes
//     to $COWLAB_RESULTS), agent events and the kernel log back over virtio-serial ports; the
//     serial console goes to a log file;
//   - is watched for kernel panics, oops/BUG/WARNING splats, silence (hang), timeouts and QEMU
//     dying, each reported as its own GuestStatus with a console excerpt.
// Nothing outlives run_guest(): QEMU is killed if still running, scratch disks and the run
// directory are removed, even on errors and on request_stop() (SIGINT/SIGTERM in `cowlab vm`).
//
// Inside the guest the command runs as root with cwd $COWLAB_PAYLOAD (/run/cowlab/payload, its
// bin/ first in PATH), and these variables:
//   COWLAB_DISKS      scratch disks in request order ("/dev/vdc /dev/vdd"); also
//                     /dev/cowlab/scratch0, scratch1, ... symlinks
//   COWLAB_RESULTS    write JSON lines here: they come back as GuestResult::records
//   COWLAB_PROFILE    profile name;  DM_DISABLE_UDEV=1 when udev is off (libdevmapper makes
//                     its own /dev/mapper nodes)
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cowlab/harness/accel.h"
#include "cowlab/harness/profile.h"
#include "cowlab/result.h"

namespace cowlab::harness {

enum class GuestStatus {
  kPass,        // the command exited 0 and the kernel log is clean
  kFail,        // the command exited non-zero (exit_code), kernel log clean
  kTimeout,     // the command ran past its timeout (guest still alive) or the guest past its own
  kHang,        // the guest went silent (no heartbeat, console or output) for hang_timeout
  kPanic,       // "Kernel panic" on the console
  kSplat,       // the command finished, but the kernel logged an oops, BUG, WARNING, hung task...
  kQemuDied,    // QEMU exited without the guest finishing or panicking
  kInfraError,  // the harness could not run the guest (spawn, image, init failure, interrupted)
};
std::string_view guest_status_name(GuestStatus status);  // "pass", "fail", "timeout", ...

// Status of `cowlab vm run`: the command's exit code for kPass/kFail, else one of these.
inline constexpr int kExitTimeout = 124;  // as coreutils timeout(1)
inline constexpr int kExitInfra = 125;
inline constexpr int kExitSplat = 251;
inline constexpr int kExitHang = 252;
inline constexpr int kExitQemuDied = 253;
inline constexpr int kExitPanic = 254;
int exit_code_for(GuestStatus status, int command_exit_code);

enum class UdevMode { kOff, kOn };  // kOn: start udevd and settle before the command
enum class GuestMode { kCommand, kShell };  // kShell: interactive bash on the terminal

struct PayloadFile {
  std::filesystem::path host_path;  // a file or a directory (copied recursively)
  std::string guest_path;           // relative to $COWLAB_PAYLOAD, e.g. "bin/cowlab"
};

struct ScratchDisk {
  uint64_t size_bytes = 0;  // sparse; see parse_size()
};

struct GuestSpec {
  ProfileImage image;
  Accel accel;
  GuestMode mode = GuestMode::kCommand;
  std::vector<std::string> command;  // argv, run exactly (no shell) — kCommand only
  std::vector<PayloadFile> payload;
  std::vector<ScratchDisk> disks;
  unsigned memory_mb = 1024;
  UdevMode udev = UdevMode::kOff;
  std::chrono::seconds command_timeout{600};  // from the command's start
  std::chrono::seconds boot_timeout{180};     // from QEMU start to the command's start
  std::chrono::seconds hang_timeout{60};      // silence that counts as a hang
  std::chrono::seconds guest_timeout{0};      // whole guest; 0: boot + command + 60 s
  std::filesystem::path console_log;          // keep the console here (else it is deleted)
  std::filesystem::path kernel_log;           // keep the kernel log (/dev/kmsg) here
  std::string label;                          // shown in progress, e.g. the profile name
  // Work handed out on request (kCommand only).  When set, the guest gets a virtio-serial port
  // cowlab.queue ($COWLAB_QUEUE in the guest, empty without it): each {"event":"next"} line the
  // command writes to $COWLAB_RESULTS is answered with one line on that port, this function's
  // value — the next item, or "" when there is none.  Called on the thread that runs the guest,
  // once per request and only then, so nothing is handed out that the command did not ask for.
  std::function<std::string()> next_work;
};

// Live output while the guest runs; every callback is optional and called on the thread that
// runs the guest.
struct GuestObserver {
  std::function<void(std::string_view)> on_stdout;   // raw bytes
  std::function<void(std::string_view)> on_stderr;   // raw bytes
  std::function<void(std::string_view)> on_record;   // one JSON line from $COWLAB_RESULTS
  std::function<void(std::string_view)> on_console;  // one console line
  std::function<void()> on_command_start;
};

struct GuestResult {
  GuestStatus status = GuestStatus::kInfraError;
  int exit_code = -1;          // the command's, when it finished
  std::string reason;          // one line: why this status
  std::string stdout_text;     // captured stdout (also streamed)
  std::string stderr_text;
  std::vector<std::string> records;   // JSON lines from $COWLAB_RESULTS
  std::vector<std::string> splats;    // kernel log lines that flagged an oops/BUG/WARNING/...
  std::string console_excerpt;        // the console lines around the failure (or the last ones)
  std::string kernel_release;         // as reported by the guest agent
  double boot_seconds = -1;           // QEMU start -> command start
  double command_seconds = -1;        // command start -> command exit
  double total_seconds = 0;
  uint64_t initrd_bytes = 0;          // the initrd this guest booted (boot initramfs + payload)
  std::filesystem::path console_log;  // where the console was kept, if requested
};

// Runs one guest to completion.  Errors (Result) are only for bad specs (missing image files,
// bad payload paths); everything that goes wrong once QEMU is involved is a GuestResult status.
// Waits for a machine-wide guest slot first (see guest_slots()).
Result<GuestResult> run_guest(const GuestSpec& spec, const GuestObserver& observer = {});

// Runs guests concurrently, at most `jobs` at once (0: guest_slots()); results in spec order.
std::vector<Result<GuestResult>> run_guests(const std::vector<GuestSpec>& specs, unsigned jobs,
                                            const std::vector<GuestObserver>& observers = {});

// How many guests may run at once on this machine: $COWLAB_VM_SLOTS, else min(cores,
// 3/4 of memory / (memory_mb + 400 MB QEMU overhead)).  Enforced across processes with lock
// files in the cache, so concurrent `cowlab vm run`s share the same bound.
unsigned guest_slots(unsigned memory_mb = 1024);

// "4G", "512M", "1T", "1048576" (bytes); K/M/G/T are powers of 1024.  Fails (kInvalid) naming
// the input for anything else, for 0, and for more than 16 TiB.
Result<uint64_t> parse_size(std::string_view text);

}  // namespace cowlab::harness

namespace cowlab::harness {

// Boots the profile's kernel with only its busybox initramfs (no disks, no agent) and measures
// the time from QEMU start to the first userspace line: the baseline for boot benchmarks, and
// the acceleration probe.  `memory_mb` should be the measured guest's: under TCG the kernel's
// memory init grows with the guest's RAM, which is machine set-up, not harness overhead.
struct BareBoot {
  bool reached_userspace = false;
  double seconds = 0;
  std::string reason;  // why it did not reach userspace
};
Result<BareBoot> boot_bare(const ProfileImage& image, const Accel& accel,
                           std::chrono::seconds timeout, unsigned memory_mb = 512);

}  // namespace cowlab::harness
