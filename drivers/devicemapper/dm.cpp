#include "devicemapper/dm.h"

#include <libdevmapper.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab::dm {

namespace {

// The last error line libdevmapper logged during the current task (for messages only).
thread_local std::string g_last_error;

// libdevmapper's log levels (libdm/misc/dm-logging.h): _LOG_FATAL 2, _LOG_ERR 3; higher bits
// carry flags such as _LOG_STDERR.
constexpr int kLogLevelMask = 7;
constexpr int kLogErr = 3;

void capture_log(int level, const char* /*file*/, int /*line*/, int /*dm_errno*/,
                 const char* format, ...) __attribute__((format(printf, 5, 6)));
void capture_log(int level, const char* /*file*/, int /*line*/, int /*dm_errno*/,
                 const char* format, ...) {
  if ((level & kLogLevelMask) > kLogErr) return;
  char buf[512];
  va_list ap;
  va_start(ap, format);
  std::vsnprintf(buf, sizeof buf, format, ap);
  va_end(ap);
  g_last_error = buf;
}

void ensure_init() {
  static std::once_flag once;
  std::call_once(once, [] { dm_log_with_errno_init(capture_log); });
}

// Docker's probe (devicemapper.UdevSetSyncSupport(true)): ask for sync, then see whether the
// library could enable it (udevd running, semaphores, cookie support).  Done on first use, not
// at start: the probe asks the kernel for its dm version, and libdevmapper makes
// /dev/mapper/control for that even on a kernel without device-mapper (probe_kernel() checks
// /proc/misc first so a refused probe leaves no such node behind).
bool udev_sync() {
  static const bool sync = [] {
    ensure_init();
    dm_udev_set_sync_support(1);
    bool on = dm_udev_get_sync_support() != 0;
    if (!on) dm_udev_set_sync_support(0);
    return on;
  }();
  return sync;
}

ErrorKind kind_for(int err) {
  if (err == EBUSY) return ErrorKind::kBusy;
  if (err == ENXIO) return ErrorKind::kNotFound;
  return ErrorKind::kSystem;
}

Error task_error(const std::string& what, const std::string& name, int err) {
  std::string msg = "dm " + what;
  if (!name.empty()) msg += " " + name;
  if (err != 0)
    msg += ": " + std::string(errno_name(err)) + " (" + std::strerror(err) + ")";
  else
    msg += ": failed";
  if (!g_last_error.empty()) msg += ": " + g_last_error;
  return Error(kind_for(err), msg, err);
}

// Which node bookkeeping a task needs.
enum class Nodes { kNone, kSync };

class Task {
 public:
  Task(int type, std::string what, std::string name)
      : task_(dm_task_create(type)), what_(std::move(what)), name_(std::move(name)) {}
  ~Task() {
    if (task_) dm_task_destroy(task_);
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;

  dm_task* get() { return task_; }
  const std::string& name() const { return name_; }

  // Checks creation and sets the name; `step` failures are library-level (no ioctl ran).
  Result<void> prepare() {
    if (!task_) return task_error(what_ + " (dm_task_create)", name_, ENOMEM);
    if (!name_.empty() && !dm_task_set_name(task_, name_.c_str()))
      return task_error(what_ + " (dm_task_set_name)", name_, EINVAL);
    return {};
  }
  Result<void> check(int rc, const char* step) {
    if (rc) return {};
    return task_error(what_ + " (" + step + ")", name_, EINVAL);
  }

  Result<void> run(Nodes nodes) {
    g_last_error.clear();
    uint32_t cookie = 0;
    const bool cookie_set = nodes == Nodes::kSync && udev_sync();
    if (cookie_set && !dm_task_set_cookie(task_, &cookie, 0))
      return task_error(what_ + " (dm_task_set_cookie)", name_, EINVAL);
    int ok = dm_task_run(task_);
    int err = ok ? 0 : dm_task_get_errno(task_);
    // Capture the message before node processing may log something else.
    Result<void> result = ok ? Result<void>() : Result<void>(task_error(what_, name_, err));
    if (cookie_set)
      wait_cookie(cookie);  // always, success or not, or the semaphore leaks
    else if (nodes == Nodes::kSync)
      dm_task_update_nodes();  // the library fallback: make/remove /dev/mapper nodes now
    return result;
  }

 private:
  // dm_udev_wait() blocks until udev's dm rules complete the cookie; without those rules it
  // would block forever.  Poll instead, and complete the cookie ourselves after 30 s.
  static void wait_cookie(uint32_t cookie) {
    for (int i = 0; i < 3000; ++i) {
      int ready = 0;
      if (!dm_udev_wait_immediate(cookie, &ready) || ready) return;
      ::usleep(10 * 1000);
    }
    (void)dm_udev_complete(cookie);
    (void)dm_udev_wait(cookie);
  }

  dm_task* task_;
  std::string what_;
  std::string name_;
};

std::vector<Target> collect_targets(dm_task* t) {
  std::vector<Target> out;
  void* next = nullptr;
  do {
    uint64_t start = 0, length = 0;
    char* type = nullptr;
    char* params = nullptr;
    next = dm_get_next_target(t, next, &start, &length, &type, &params);
    if (type) out.push_back({start, length, type, params ? params : ""});
  } while (next);
  return out;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool proc_misc_has_device_mapper() {
  auto misc = sys::read_file("/proc/misc");
  return misc.ok() && misc->find(" device-mapper\n") != std::string::npos;
}

}  // namespace

std::string Version::text() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

Result<void> probe_kernel() {
  // /proc/misc before any libdevmapper call: the library creates /dev/mapper/control on its
  // first task, kernel support or not.
  if (!proc_misc_has_device_mapper()) {
    // dm-mod may be a module nobody loaded yet (the Debian cloud kernels build it as one).
    std::string out;
    auto rc = sys::run({"modprobe", "dm_mod"}, &out);
    if (!proc_misc_has_device_mapper()) {
      std::string why = "this kernel has no device-mapper: /proc/misc has no device-mapper entry";
      auto control = sys::stat("/dev/mapper/control");
      why += control.ok()
                 ? ", /dev/mapper/control exists but is not backed by a driver"
                 : ", /dev/mapper/control: " + std::string(errno_name(control.error().err()));
      why += " (modprobe dm_mod: ";
      if (!rc.ok())
        why += rc.error().message();
      else
        why += "exit status " + std::to_string(*rc) + (out.empty() ? "" : ": " + trim(out));
      why += ")";
      return Error::not_supported(why);
    }
  }
  auto v = driver_version();
  if (!v.ok()) return Error::not_supported("device-mapper does not answer: " + v.error().message());
  return {};
}

Result<Version> driver_version() {
  ensure_init();
  Task t(DM_DEVICE_VERSION, "version", "");
  COWLAB_TRY(t.prepare());
  COWLAB_TRY(t.run(Nodes::kNone));
  char buf[64] = {};
  if (!dm_task_get_driver_version(t.get(), buf, sizeof buf))
    return task_error("version (dm_task_get_driver_version)", "", EINVAL);
  Version v;
  if (std::sscanf(buf, "%u.%u.%u", &v.major, &v.minor, &v.patch) < 2)
    return Error(ErrorKind::kSystem,
                 std::string("dm version: unparsable driver version \"") + buf + "\"");
  return v;
}

std::string library_version() {
  ensure_init();
  char buf[128] = {};
  if (!dm_get_library_version(buf, sizeof buf)) return "";
  return buf;
}

Result<std::vector<std::pair<std::string, Version>>> target_versions() {
  ensure_init();
  Task t(DM_DEVICE_LIST_VERSIONS, "list versions", "");
  COWLAB_TRY(t.prepare());
  COWLAB_TRY(t.run(Nodes::kNone));
  std::vector<std::pair<std::string, Version>> out;
  dm_versions* v = dm_task_get_versions(t.get());
  if (!v) return out;
  for (;;) {
    out.push_back({v->name, Version{v->version[0], v->version[1], v->version[2]}});
    if (!v->next) break;
    v = reinterpret_cast<dm_versions*>(reinterpret_cast<char*>(v) + v->next);
  }
  return out;
}

Result<bool> ensure_thin_pool_target() {
  auto has = [&]() -> Result<bool> {
    auto targets = COWLAB_TRY(target_versions());
    for (const auto& [name, version] : targets)
      if (name == "thin-pool") return true;
    return false;
  };
  if (COWLAB_TRY(has())) return true;
  // The kernel would load dm-thin-pool on the first thin-pool table by itself; loading it
  // here lets init say "no thin-pool target" instead of failing later on a table load.
  (void)sys::run({"modprobe", "dm_thin_pool"}, nullptr);
  return has();
}

bool udev_sync_supported() {
  return udev_sync();
}

bool library_deferred_remove_supported() {
  // dm_task_deferred_remove is referenced below (remove()), so a library without it would not
  // link: support is a property of the build.
  return true;
}

Result<DeviceInfo> info(const std::string& name) {
  ensure_init();
  Task t(DM_DEVICE_INFO, "info", name);
  COWLAB_TRY(t.prepare());
  COWLAB_TRY(t.run(Nodes::kNone));
  dm_info i{};
  if (!dm_task_get_info(t.get(), &i)) return task_error("info (dm_task_get_info)", name, EINVAL);
  DeviceInfo out;
  out.exists = i.exists != 0;
  if (!out.exists) return out;
  out.suspended = i.suspended != 0;
  out.open_count = i.open_count;
  out.major = i.major;
  out.minor = i.minor;
  out.deferred_remove = i.deferred_remove != 0;
  out.target_count = i.target_count;
  return out;
}

Result<void> create(const std::string& name, const std::vector<Target>& table) {
  ensure_init();
  Task t(DM_DEVICE_CREATE, "create", name);
  COWLAB_TRY(t.prepare());
  for (const auto& target : table)
    COWLAB_TRY(t.check(dm_task_add_target(t.get(), target.start, target.length, target.type.c_str(),
                                          target.params.c_str()),
                       "dm_task_add_target"));
  return t.run(Nodes::kSync);
}

Result<void> suspend(const std::string& name) {
  ensure_init();
  Task t(DM_DEVICE_SUSPEND, "suspend", name);
  COWLAB_TRY(t.prepare());
  return t.run(Nodes::kNone);
}

Result<void> resume(const std::string& name) {
  ensure_init();
  Task t(DM_DEVICE_RESUME, "resume", name);
  COWLAB_TRY(t.prepare());
  return t.run(Nodes::kSync);
}

Result<void> remove(const std::string& name, Removal how) {
  ensure_init();
  Task t(DM_DEVICE_REMOVE, how == Removal::kDeferred ? "remove (deferred)" : "remove", name);
  COWLAB_TRY(t.prepare());
  if (how == Removal::kDeferred)
    COWLAB_TRY(t.check(dm_task_deferred_remove(t.get()), "dm_task_deferred_remove"));
  return t.run(Nodes::kSync);
}

Result<std::string> message(const std::string& name, const std::string& text) {
  ensure_init();
  Task t(DM_DEVICE_TARGET_MSG, "message \"" + text + "\" to", name);
  COWLAB_TRY(t.prepare());
  COWLAB_TRY(t.check(dm_task_set_sector(t.get(), 0), "dm_task_set_sector"));
  COWLAB_TRY(t.check(dm_task_set_message(t.get(), text.c_str()), "dm_task_set_message"));
  COWLAB_TRY(t.run(Nodes::kNone));
  const char* response = dm_task_get_message_response(t.get());
  return std::string(response ? response : "");
}

Result<std::vector<Target>> table(const std::string& name, TableKind kind) {
  ensure_init();
  const bool status = kind != TableKind::kTable;
  const char* what = kind == TableKind::kTable    ? "table"
                     : kind == TableKind::kStatus ? "status"
                                                  : "status (noflush)";
  Task t(status ? DM_DEVICE_STATUS : DM_DEVICE_TABLE, what, name);
  COWLAB_TRY(t.prepare());
  COWLAB_TRY(t.check(dm_task_no_open_count(t.get()), "dm_task_no_open_count"));
  if (kind == TableKind::kStatusNoFlush)
    COWLAB_TRY(t.check(dm_task_no_flush(t.get()), "dm_task_no_flush"));
  COWLAB_TRY(t.run(Nodes::kNone));
  // libdevmapper turns ENXIO from a status ioctl into success with no device; say so.
  dm_info i{};
  if (dm_task_get_info(t.get(), &i) && !i.exists) return task_error(what, name, ENXIO);
  return collect_targets(t.get());
}

Result<std::vector<std::string>> list_devices() {
  ensure_init();
  Task t(DM_DEVICE_LIST, "list", "");
  COWLAB_TRY(t.prepare());
  COWLAB_TRY(t.run(Nodes::kNone));
  std::vector<std::string> out;
  dm_names* n = dm_task_get_names(t.get());
  if (!n || !n->dev) return out;  // no devices
  for (;;) {
    out.push_back(n->name);
    if (!n->next) break;
    n = reinterpret_cast<dm_names*>(reinterpret_cast<char*>(n) + n->next);
  }
  return out;
}

std::string device_path(const std::string& name) {
  ensure_init();
  return std::string(dm_dir()) + "/" + name;
}

Result<void> ensure_node(const std::string& name) {
  DeviceInfo i = COWLAB_TRY(info(name));
  if (!i.exists) return task_error("mknodes", name, ENXIO);
  const std::string path = device_path(name);
  auto node_ok = [&] {
    auto st = sys::stat(path);
    return st.ok() && S_ISBLK(st->st_mode) && major(st->st_rdev) == i.major &&
           minor(st->st_rdev) == i.minor;
  };
  if (node_ok()) return {};
  g_last_error.clear();
  if (!dm_mknodes(name.c_str())) return task_error("mknodes", name, EIO);
  dm_task_update_nodes();
  if (node_ok()) return {};
  return Error(ErrorKind::kSystem,
               "dm mknodes " + name + ": " + path + " is not block device " +
                   std::to_string(i.major) + ":" + std::to_string(i.minor) + " after mknodes" +
                   (g_last_error.empty() ? "" : ": " + g_last_error),
               ENODEV);
}

}  // namespace cowlab::dm
