#include "cowlab/harness/guest.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "cowlab/harness/stop.h"
#include "cowlab/log.h"
#include "cpio.h"
#include "kernel_log.h"
#include "process.h"
#include "qmp.h"
#include "util.h"
#include "work_port.h"

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace cowlab::harness {

std::string_view guest_status_name(GuestStatus s) {
  switch (s) {
    case GuestStatus::kPass: return "pass";
    case GuestStatus::kFail: return "fail";
    case GuestStatus::kTimeout: return "timeout";
    case GuestStatus::kHang: return "hang";
    case GuestStatus::kPanic: return "panic";
    case GuestStatus::kSplat: return "splat";
    case GuestStatus::kQemuDied: return "qemu-died";
    case GuestStatus::kInfraError: return "infra-error";
  }
  return "?";
}

int exit_code_for(GuestStatus s, int command_exit_code) {
  switch (s) {
    case GuestStatus::kPass:
    case GuestStatus::kFail: return command_exit_code;
    case GuestStatus::kTimeout: return kExitTimeout;
    case GuestStatus::kHang: return kExitHang;
    case GuestStatus::kPanic: return kExitPanic;
    case GuestStatus::kSplat: return kExitSplat;
    case GuestStatus::kQemuDied: return kExitQemuDied;
    case GuestStatus::kInfraError: return kExitInfra;
  }
  return kExitInfra;
}

Result<uint64_t> parse_size(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Error::invalid("disk size '" + std::string(text) + "': " + std::string(why) +
                          " (use e.g. 512M, 4G, 1T)");
  };
  if (text.empty()) return bad("empty");
  size_t i = 0;
  uint64_t n = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (n > (1ull << 50)) return bad("too large");
    n = n * 10 + static_cast<uint64_t>(text[i++] - '0');
  }
  if (i == 0) return bad("not a number");
  std::string_view unit = text.substr(i);
  uint64_t mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KiB" || unit == "k") mult = 1ull << 10;
  else if (unit == "M" || unit == "MiB") mult = 1ull << 20;
  else if (unit == "G" || unit == "GiB") mult = 1ull << 30;
  else if (unit == "T" || unit == "TiB") mult = 1ull << 40;
  else return bad("unknown unit '" + std::string(unit) + "'");
  if (n == 0) return bad("must be more than 0");
  if (n > (16ull << 40) / mult) return bad("larger than 16 TiB");
  return n * mult;
}

unsigned guest_slots(unsigned memory_mb) {
  if (const char* e = std::getenv("COWLAB_VM_SLOTS")) {
    int v = std::atoi(e);
    if (v > 0) return static_cast<unsigned>(v);
  }
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  uint64_t mem_kb = 0;
  std::ifstream mi("/proc/meminfo");
  for (std::string k; mi >> k;) {
    if (k == "MemTotal:") {
      mi >> mem_kb;
      break;
    }
    std::string rest;
    std::getline(mi, rest);
  }
  unsigned by_mem = static_cast<unsigned>((mem_kb / 1024) * 3 / 4 / (memory_mb + 400));
  return std::max(1u, std::min(cores, by_mem));
}

namespace {

std::atomic<unsigned> g_seq{0};

// Removes run directories whose owning process is gone (a harness killed with SIGKILL).
void reap_stale_run_dirs(const fs::path& runs) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(runs, ec)) {
    std::string n = e.path().filename().string();
    pid_t pid = static_cast<pid_t>(std::atol(n.c_str()));
    if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) fs::remove_all(e.path(), ec);
  }
}

struct Slot {
  detail::FileLock lock;
};

Result<Slot> acquire_slot(unsigned memory_mb, const std::string& label) {
  const unsigned n = guest_slots(memory_mb);
  const fs::path dir = cache_dir() / "slots";
  bool told = false;
  for (;;) {
    for (unsigned i = 0; i < n; ++i) {
      auto l = detail::FileLock::try_acquire(dir / ("slot-" + std::to_string(i) + ".lock"));
      if (l.ok()) return Slot{std::move(*l)};
    }
    if (!told) spdlog::info("cowlab vm: [{}] waiting for one of {} guest slots", label, n);
    told = true;
    if (stop_requested()) return Error(ErrorKind::kSystem, "waiting for a guest slot: interrupted", EINTR);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// A per-guest directory under $COWLAB_CACHE/run, removed (with everything in it) on scope exit.
class RunDir {
 public:
  static Result<RunDir> create() {
    fs::path runs = cache_dir() / "run";
    std::error_code ec;
    fs::create_directories(runs, ec);
    reap_stale_run_dirs(runs);
    fs::path d = runs / (std::to_string(::getpid()) + "-" + std::to_string(g_seq++));
    fs::remove_all(d, ec);
    if (!fs::create_directory(d, ec)) return Error::from_errno("mkdir", d.string(), ec.value());
    return RunDir(d);
  }
  RunDir(RunDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ~RunDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  explicit RunDir(fs::path p) : path_(std::move(p)) {}
  fs::path path_;
};

std::vector<std::string> base_qemu_args(const ProfileImage& img, const Accel& accel, unsigned memory_mb) {
  std::vector<std::string> a = {"qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
                                "-no-reboot", "-machine", "q35", "-smp", "1", "-m", std::to_string(memory_mb)};
  if (accel.kind == AccelKind::kKvm) {
    a.insert(a.end(), {"-accel", "kvm", "-cpu", "host"});
  } else {
    a.insert(a.end(), {"-accel", "tcg,tb-size=64", "-cpu", img.qemu_cpu.empty() ? "max,la57=off" : img.qemu_cpu});
  }
  a.insert(a.end(), {"-kernel", img.kernel.string()});
  return a;
}

// no_timer_check: on a loaded host, TCG guests can fail the IO-APIC timer check and panic
// ("IO-APIC + timer doesn't work!") before userspace.
const char* kCmdline = "console=ttyS0 panic=-1 loglevel=4 no_timer_check i8042.noaux i8042.nokbd";

Result<std::string> read_agent_script() {
  auto images = COWLAB_TRY(vm_images_dir());
  return detail::read_file(images / "guest" / "agent.sh");
}

std::string job_env(const GuestSpec& s) {
  std::string e;
  auto kv = [&](const std::string& k, const std::string& v) { e += k + "=" + detail::shell_quote(v) + "\n"; };
  kv("COWLAB_MODE", s.mode == GuestMode::kShell ? "shell" : "command");
  kv("COWLAB_TIMEOUT", std::to_string(s.command_timeout.count()));
  kv("COWLAB_HB", "2");
  kv("COWLAB_UDEV", s.udev == UdevMode::kOn ? "1" : "0");
  kv("COWLAB_NDISKS", std::to_string(s.disks.size()));
  kv("COWLAB_PROFILE", s.image.profile);
  if (s.mode == GuestMode::kShell) {
    const char* term = std::getenv("TERM");
    kv("TERM", term ? term : "vt100");
    winsize ws{};
    if (::ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) {
      kv("COWLAB_ROWS", std::to_string(ws.ws_row));
      kv("COWLAB_COLS", std::to_string(ws.ws_col));
    }
  }
  return e;
}

Result<void> add_parents(detail::CpioWriter& w, std::string_view path, std::vector<std::string>& made) {
  for (size_t p = path.find('/'); p != std::string_view::npos; p = path.find('/', p + 1)) {
    std::string dir(path.substr(0, p));
    if (std::find(made.begin(), made.end(), dir) == made.end()) {
      COWLAB_TRY(w.add_dir(dir));
      made.push_back(dir);
    }
  }
  return ok();
}

Result<void> write_initrd(const GuestSpec& s, const fs::path& out_path) {
  std::string data = COWLAB_TRY(detail::read_file(s.image.boot_initrd));
  if (data.size() % 4) data.append(4 - data.size() % 4, '\0');
  std::string agent = COWLAB_TRY(read_agent_script());
  detail::CpioWriter w(&data);
  std::vector<std::string> made = {"cowlab", "cowlab/payload"};
  COWLAB_TRY(w.add_dir("cowlab"));
  COWLAB_TRY(w.add_dir("cowlab/payload"));
  COWLAB_TRY(w.add_file("cowlab/agent.sh", agent, 0755));
  COWLAB_TRY(w.add_file("cowlab/job.env", job_env(s)));
  std::string cmd = "exec";
  for (const auto& a : s.command) cmd += " " + detail::shell_quote(a);
  COWLAB_TRY(w.add_file("cowlab/cmd.sh", cmd + "\n", 0755));
  for (const auto& p : s.payload) {
    std::string g = p.guest_path;
    while (!g.empty() && g.front() == '/') g.erase(0, 1);
    if (g.empty() || g.find("..") != std::string::npos)
      return Error::invalid("payload guest path '" + p.guest_path + "': must be relative, without '..'");
    std::string full = "cowlab/payload/" + g;
    COWLAB_TRY(add_parents(w, full, made));
    COWLAB_TRY_CTX(w.add_host_path(full, p.host_path), "payload " + p.host_path.string());
  }
  COWLAB_TRY(w.finish());
  std::ofstream out(out_path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) return Error::from_errno("write", out_path.string(), errno);
  return ok();
}

Result<void> check_image(const ProfileImage& img) {
  for (const auto& f : {img.kernel, img.boot_initrd, img.root_disk}) {
    if (f.empty() || !fs::exists(f))
      return Error::not_found("profile " + img.profile + ": image file '" + f.string() +
                              "' missing (run: cowlab vm build --profile " + img.profile + ")");
  }
  return ok();
}

std::string excerpt(const std::deque<std::string>& lines, std::optional<size_t> focus, size_t before, size_t after) {
  size_t start = 0, end = lines.size();
  if (focus) {
    start = *focus > before ? *focus - before : 0;
    end = std::min(lines.size(), *focus + after + 1);
  } else if (lines.size() > before) {
    start = lines.size() - before;
  }
  std::string s;
  for (size_t i = start; i < end; ++i) s += lines[i] + "\n";
  return s;
}

// Everything read back from one guest, and the verdict so far.
struct Monitor {
  Monitor(const GuestSpec& s, const GuestObserver& o) : spec(s), obs(o) {}
  const GuestSpec& spec;
  const GuestObserver& obs;
  GuestResult r;
  Clock::time_point t0 = Clock::now();
  Clock::time_point last_output = t0;
  std::optional<Clock::time_point> t_agent, t_start, t_exit, t_panic, t_init_error;
  std::optional<json> exit_event;
  std::deque<std::string> console, kmsg;
  size_t console_dropped = 0, kmsg_dropped = 0;
  std::optional<size_t> console_focus, kmsg_focus;
  detail::LineSplitter con_split, ctl_split, rec_split, kmsg_split;

  void push(std::deque<std::string>& q, size_t& dropped, std::optional<size_t>& focus, std::string_view l) {
    q.emplace_back(l);
    if (q.size() > 2000) {
      q.pop_front();
      ++dropped;
      if (focus && *focus > 0) --*focus;
    }
  }
  void kernel_line(std::string_view line, bool from_console) {
    auto ev = detail::classify_kernel_line(line);
    auto& focus = from_console ? console_focus : kmsg_focus;
    size_t idx = (from_console ? console.size() : kmsg.size()) - 1;
    if (ev == detail::KernelEvent::kPanic && !t_panic) {
      t_panic = Clock::now();
      focus = idx;
    }
    if (ev == detail::KernelEvent::kSplat) {
      std::string msg(detail::kmsg_message(line));
      if (r.splats.size() < 50 && std::find(r.splats.begin(), r.splats.end(), msg) == r.splats.end()) r.splats.push_back(msg);
      if (!focus) focus = idx;
    }
  }
  void on_console(std::string_view l) {
    push(console, console_dropped, console_focus, l);
    if (obs.on_console) obs.on_console(l);
    kernel_line(l, true);
    if ((l.find("COWLAB-INIT-ERROR") != std::string_view::npos || l.find("COWLAB-AGENT-ERROR") != std::string_view::npos) && !t_init_error) {
      t_init_error = Clock::now();
      r.reason = std::string(l);
      console_focus = console.size() - 1;
    }
  }
  void on_kmsg(std::string_view l) {
    push(kmsg, kmsg_dropped, kmsg_focus, l);
    kernel_line(l, false);
  }
  void on_ctl(std::string_view l) {
    json j = json::parse(l, nullptr, false);
    if (j.is_discarded() || !j.contains("event")) return;
    std::string ev = j["event"].get<std::string>();
    if (ev == "agent") {
      t_agent = Clock::now();
      r.kernel_release = j.value("kernel", "");
    } else if (ev == "start") {
      t_start = Clock::now();
      r.boot_seconds = std::chrono::duration<double>(*t_start - t0).count();
      if (obs.on_command_start) obs.on_command_start();
    } else if (ev == "exit") {
      t_exit = Clock::now();
      exit_event = j;
      if (t_start) r.command_seconds = std::chrono::duration<double>(*t_exit - *t_start).count();
    }
  }
};

}  // namespace

Result<GuestResult> run_guest(const GuestSpec& spec, const GuestObserver& obs) {
  COWLAB_TRY(check_image(spec.image));
  if (spec.mode == GuestMode::kCommand && spec.command.empty()) return Error::usage("run guest: no command given");
  if (spec.memory_mb < 256) return Error::invalid("guest memory " + std::to_string(spec.memory_mb) + " MB: at least 256 MB");
  for (const auto& p : spec.payload)
    if (!fs::exists(p.host_path)) return Error::not_found("payload '" + p.host_path.string() + "': not found");
  const std::string label = spec.label.empty() ? spec.image.profile : spec.label;

  auto slot = COWLAB_TRY(acquire_slot(spec.memory_mb, label));
  auto run = COWLAB_TRY(RunDir::create());
  const fs::path& d = run.path();
  Monitor m(spec, obs);
  auto infra = [&](std::string why) {
    GuestResult r;
    r.status = GuestStatus::kInfraError;
    r.reason = std::move(why);
    return r;
  };

  COWLAB_TRY(write_initrd(spec, d / "initrd.cpio"));
  {
    std::error_code size_ec;
    m.r.initrd_bytes = fs::file_size(d / "initrd.cpio", size_ec);
  }
  std::vector<fs::path> scratch;
  for (size_t i = 0; i < spec.disks.size(); ++i) {
    fs::path p = d / ("scratch" + std::to_string(i) + ".img");
    int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return Error::from_errno("create", p.string(), errno);
    int rc = ::ftruncate(fd, static_cast<off_t>(spec.disks[i].size_bytes));
    int e = errno;
    ::close(fd);
    if (rc != 0) return Error::from_errno("ftruncate", p.string(), e);
    scratch.push_back(p);
  }

  fs::path qmp_sock = d / "qmp.sock";
  if (qmp_sock.string().size() > 100) qmp_sock = fs::path("/tmp") / ("cowlab-qmp-" + d.filename().string() + ".sock");
  struct SockCleanup {
    fs::path p;
    ~SockCleanup() { std::error_code ec; fs::remove(p, ec); }
  } sock_cleanup{qmp_sock};

  auto a = base_qemu_args(spec.image, spec.accel, spec.memory_mb);
  a.insert(a.end(), {"-initrd", (d / "initrd.cpio").string(), "-append",
                     std::string(kCmdline) + " cowlab.mode=agent"});
  if (spec.mode == GuestMode::kShell) {
    a.insert(a.end(), {"-chardev", "stdio,id=con,mux=on,signal=off,logfile=" + (d / "console.log").string(),
                       "-serial", "chardev:con", "-mon", "chardev=con,mode=readline"});
  } else {
    a.insert(a.end(), {"-chardev", "file,id=con,path=" + (d / "console.log").string(), "-serial", "chardev:con"});
  }
  a.insert(a.end(), {"-device", "virtio-serial-pci,id=vser"});
  // The work port's chardev is a socket QEMU listens on (wait=off: the guest boots without the
  // host end); the host connects and answers requests as they come (work_port.h).
  fs::path work_sock = d / "queue.sock";
  if (work_sock.string().size() > 100)
    work_sock = fs::path("/tmp") / ("cowlab-queue-" + d.filename().string() + ".sock");
  struct WorkSockCleanup {
    fs::path p;
    ~WorkSockCleanup() {
      std::error_code ec;
      fs::remove(p, ec);
    }
  } work_sock_cleanup{spec.next_work ? work_sock : fs::path()};
  std::optional<detail::WorkPort> work_port;
  if (spec.next_work && spec.mode == GuestMode::kCommand) {
    work_port.emplace(work_sock);
    a.insert(a.end(),
             {"-chardev", "socket,id=pqueue,path=" + work_sock.string() + ",server=on,wait=off",
              "-device", "virtserialport,bus=vser.0,chardev=pqueue,name=cowlab.queue"});
  }
  for (const char* port : {"ctl", "out", "err", "rec", "kmsg"}) {
    std::string id = std::string("p") + port;
    a.insert(a.end(), {"-chardev", "file,id=" + id + ",path=" + (d / port).string(), "-device",
                       "virtserialport,bus=vser.0,chardev=" + id + ",name=cowlab." + port});
  }
  auto disk = [&](const std::string& id, const fs::path& file, const std::string& opts, const std::string& serial) {
    a.insert(a.end(), {"-drive", "file=" + file.string() + ",format=raw,if=none,id=" + id + "," + opts, "-device",
                       "virtio-blk-pci,drive=" + id + ",serial=" + serial});
  };
  disk("root", spec.image.root_disk, "snapshot=on", "cowlab-root");
  if (!spec.image.modules_disk.empty()) disk("mods", spec.image.modules_disk, "readonly=on", "cowlab-mods");
  for (size_t i = 0; i < scratch.size(); ++i)
    disk("s" + std::to_string(i), scratch[i], "cache=unsafe,discard=unmap", "cowlab-scratch" + std::to_string(i));
  a.insert(a.end(), {"-qmp", "unix:" + qmp_sock.string() + ",server=on,wait=off"});

  detail::SpawnOptions so;
  so.argv = a;
  if (spec.mode == GuestMode::kShell) {
    so.stdin_mode = detail::StdioMode::kInherit;
    so.output_mode = detail::StdioMode::kInherit;
    so.group = detail::ProcessGroup::kInherit;
  } else {
    so.output_file = d / "qemu.log";
  }
  m.t0 = Clock::now();
  m.last_output = m.t0;
  auto child_r = detail::Subprocess::spawn(so);
  if (!child_r.ok()) return infra("start QEMU: " + child_r.error().message());
  auto qemu = std::move(*child_r);
  std::optional<detail::QmpClient> qmp;

  std::optional<std::string> work_error;  // the work port failed: the guest waits in vain
  detail::FileTail t_con(d / "console.log"), t_ctl(d / "ctl"), t_out(d / "out"), t_err(d / "err"),
      t_rec(d / "rec"), t_kmsg(d / "kmsg"), t_qemu(d / "qemu.log");
  auto drain = [&]() {
    bool any = false;
    auto take = [&](detail::FileTail& t) {
      std::string s = t.read_new();
      if (!s.empty()) any = true;
      return s;
    };
    m.con_split.feed(take(t_con), [&](std::string_view l) { m.on_console(l); });
    m.kmsg_split.feed(take(t_kmsg), [&](std::string_view l) { m.on_kmsg(l); });
    if (auto s = take(t_out); !s.empty()) {
      if (m.r.stdout_text.size() < (64u << 20)) m.r.stdout_text += s;
      if (obs.on_stdout) obs.on_stdout(s);
    }
    if (auto s = take(t_err); !s.empty()) {
      if (m.r.stderr_text.size() < (64u << 20)) m.r.stderr_text += s;
      if (obs.on_stderr) obs.on_stderr(s);
    }
    m.rec_split.feed(take(t_rec), [&](std::string_view l) {
      m.r.records.emplace_back(l);
      if (obs.on_record) obs.on_record(l);
      if (work_port && !work_error && detail::is_work_request(l)) {
        auto sent = work_port->send_line(spec.next_work(), std::chrono::milliseconds(5000));
        if (!sent.ok()) work_error = sent.error().message();
      }
    });
    m.ctl_split.feed(take(t_ctl), [&](std::string_view l) { m.on_ctl(l); });
    if (any) m.last_output = Clock::now();
  };

  const auto guest_timeout = spec.guest_timeout.count() > 0
                                 ? spec.guest_timeout
                                 : spec.boot_timeout + spec.command_timeout + std::chrono::seconds(60);
  std::optional<GuestStatus> verdict;
  std::string why;
  auto since = [](Clock::time_point t) { return Clock::now() - t; };
  const bool interactive = spec.mode == GuestMode::kShell;
  for (;;) {
    const bool alive = qemu.running();
    drain();
    if (alive && !qmp) {
      auto c = detail::QmpClient::connect(qmp_sock, std::chrono::milliseconds(50));
      if (c.ok()) qmp.emplace(std::move(*c));
    }
    if (stop_requested()) {
      verdict = GuestStatus::kInfraError;
      why = "interrupted by signal " + std::to_string(stop_signal());
      break;
    }
    if (m.t_panic && (!alive || since(*m.t_panic) > std::chrono::seconds(3))) {
      verdict = GuestStatus::kPanic;
      why = "kernel panic";
      break;
    }
    if (m.exit_event) {
      if (!alive || since(*m.t_exit) > std::chrono::seconds(3)) break;  // powered off / no ACPI
    } else if (!alive) {
      verdict = GuestStatus::kQemuDied;
      why = "QEMU exited with status " + std::to_string(qemu.exit_status().value_or(-1)) +
            " before the guest finished";
      if (m.t_init_error) {
        verdict = GuestStatus::kInfraError;
        why = "guest init failed: " + m.r.reason;
      }
      break;
    }
    if (work_port) work_port->try_connect();
    if (work_error) {
      verdict = GuestStatus::kInfraError;
      why = "handing out work: " + *work_error;
      break;
    }
    if (m.t_init_error && since(*m.t_init_error) > std::chrono::seconds(2)) {
      verdict = GuestStatus::kInfraError;
      why = "guest init failed: " + m.r.reason;
      break;
    }
    if (!interactive) {
      if (since(m.last_output) > spec.hang_timeout) {
        verdict = GuestStatus::kHang;
        why = "no output from the guest (heartbeat, console, command) for " +
              std::to_string(spec.hang_timeout.count()) + " s";
        break;
      }
      if (!m.t_start && since(m.t0) > spec.boot_timeout) {
        verdict = GuestStatus::kTimeout;
        why = "the guest did not start the command within " + std::to_string(spec.boot_timeout.count()) + " s of boot";
        break;
      }
      if (m.t_start && !m.exit_event && since(*m.t_start) > spec.command_timeout + std::chrono::seconds(30)) {
        verdict = GuestStatus::kTimeout;
        why = "the command ran past its " + std::to_string(spec.command_timeout.count()) +
              " s timeout and the guest did not stop it";
        break;
      }
      if (since(m.t0) > guest_timeout) {
        verdict = GuestStatus::kTimeout;
        why = "the guest ran past its " + std::to_string(guest_timeout.count()) + " s limit";
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Stop QEMU: ask politely over QMP, then kill.  Never leave it running.
  if (qemu.running()) {
    if (qmp) (void)qmp->execute("quit", {}, std::chrono::milliseconds(1000));
    if (!qemu.wait_for(std::chrono::milliseconds(1500))) qemu.kill();
  }
  drain();
  m.con_split.flush([&](std::string_view l) { m.on_console(l); });
  m.kmsg_split.flush([&](std::string_view l) { m.on_kmsg(l); });

  GuestResult& r = m.r;
  r.total_seconds = std::chrono::duration<double>(Clock::now() - m.t0).count();
  if (!verdict) {
    // The agent reported the command's exit.
    r.exit_code = m.exit_event->value("status", -1);
    if (m.exit_event->value("timed_out", false)) {
      verdict = GuestStatus::kTimeout;
      why = "the command ran past its " + std::to_string(spec.command_timeout.count()) + " s timeout";
    } else if (m.t_panic) {
      verdict = GuestStatus::kPanic;
      why = "kernel panic";
    } else if (!r.splats.empty()) {
      verdict = GuestStatus::kSplat;
      why = "kernel reported: " + r.splats.front();
    } else {
      verdict = r.exit_code == 0 ? GuestStatus::kPass : GuestStatus::kFail;
      why = "command exited with status " + std::to_string(r.exit_code);
    }
  } else if (*verdict == GuestStatus::kQemuDied && m.t_panic) {
    verdict = GuestStatus::kPanic;
    why = "kernel panic";
  }
  r.status = *verdict;
  r.reason = why;
  // The excerpt: around the panic or first splat, else the end of the console (+ kernel log).
  if (m.console_focus)
    r.console_excerpt = excerpt(m.console, m.console_focus, 30, 40);
  else if (m.kmsg_focus)
    r.console_excerpt = excerpt(m.kmsg, m.kmsg_focus, 10, 40);
  else
    r.console_excerpt = excerpt(m.console, std::nullopt, 30, 0);
  if (r.status == GuestStatus::kQemuDied) {
    std::string ql = t_qemu.path().empty() ? "" : detail::read_file(t_qemu.path()).value_or("");
    if (!ql.empty()) r.console_excerpt += "--- qemu ---\n" + ql.substr(ql.size() > 4000 ? ql.size() - 4000 : 0);
  }
  std::error_code ec;
  if (!spec.console_log.empty()) {
    fs::create_directories(spec.console_log.parent_path(), ec);
    fs::copy_file(d / "console.log", spec.console_log, fs::copy_options::overwrite_existing, ec);
    if (!ec) r.console_log = spec.console_log;
  }
  if (!spec.kernel_log.empty()) {
    fs::create_directories(spec.kernel_log.parent_path(), ec);
    fs::copy_file(d / "kmsg", spec.kernel_log, fs::copy_options::overwrite_existing, ec);
  }
  return r;
}

std::vector<Result<GuestResult>> run_guests(const std::vector<GuestSpec>& specs, unsigned jobs,
                                            const std::vector<GuestObserver>& observers) {
  std::vector<std::optional<Result<GuestResult>>> results(specs.size());
  if (jobs == 0) jobs = guest_slots(specs.empty() ? 1024 : specs.front().memory_mb);
  jobs = std::max(1u, std::min<unsigned>(jobs, static_cast<unsigned>(specs.size())));
  std::atomic<size_t> next{0};
  std::vector<std::thread> workers;
  static const GuestObserver kNone;
  for (unsigned w = 0; w < jobs; ++w) {
    workers.emplace_back([&] {
      for (size_t i; (i = next++) < specs.size();) {
        results[i] = run_guest(specs[i], i < observers.size() ? observers[i] : kNone);
      }
    });
  }
  for (auto& t : workers) t.join();
  std::vector<Result<GuestResult>> out;
  for (auto& r : results) out.push_back(std::move(*r));
  return out;
}

Result<BareBoot> boot_bare(const ProfileImage& img, const Accel& accel, std::chrono::seconds timeout,
                           unsigned memory_mb) {
  if (img.kernel.empty() || !fs::exists(img.kernel)) return Error::not_found("kernel '" + img.kernel.string() + "': not found");
  auto slot = COWLAB_TRY(acquire_slot(memory_mb, img.profile));
  auto run = COWLAB_TRY(RunDir::create());
  const fs::path& d = run.path();
  auto a = base_qemu_args(img, accel, memory_mb);
  a.insert(a.end(), {"-initrd", img.boot_initrd.string(), "-append", std::string(kCmdline) + " cowlab.mode=bare",
                     "-chardev", "file,id=con,path=" + (d / "console.log").string(), "-serial", "chardev:con"});
  detail::SpawnOptions so;
  so.argv = a;
  so.output_file = d / "qemu.log";
  const auto t0 = Clock::now();
  auto qemu = COWLAB_TRY(detail::Subprocess::spawn(so));
  detail::FileTail con(d / "console.log");
  std::string seen;
  BareBoot b;
  for (;;) {
    bool alive = qemu.running();
    seen += con.read_new();
    if (seen.find("COWLAB-BARE-READY") != std::string::npos) {
      b.reached_userspace = true;
      b.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      break;
    }
    if (!alive) {
      b.reason = "QEMU exited (status " + std::to_string(qemu.exit_status().value_or(-1)) + ") before userspace: " +
                 detail::read_file(d / "qemu.log").value_or("").substr(0, 400);
      break;
    }
    if (Clock::now() - t0 > timeout) {
      b.reason = "guest did not reach userspace within " + std::to_string(timeout.count()) + " s";
      break;
    }
    if (stop_requested()) {
      b.reason = "interrupted";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  b.seconds = b.reached_userspace ? b.seconds : std::chrono::duration<double>(Clock::now() - t0).count();
  qemu.kill();
  return b;
}

}  // namespace cowlab::harness
