#include "conformance/backing_store.h"

#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab::testing {

namespace {

bool under(const std::string& path, const std::string& dir) {
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                         path[dir.size()] == '/');
}

// mkdtemp under `base`, canonicalised so it compares equal to mountinfo paths.
Result<std::string> make_temp_dir(const std::string& base, const std::string& prefix) {
  COWLAB_TRY(sys::mkdir_all(base, 0755));
  std::string tmpl = base + "/" + prefix + "XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return Error::from_errno("mkdtemp", tmpl, errno);
  char* real = ::realpath(tmpl.c_str(), nullptr);
  if (real == nullptr) return Error::from_errno("realpath", tmpl, errno);
  std::string out(real);
  ::free(real);
  return out;
}

// Detaches every mount at or below `dir` except `keep`; returns the ones it found.
std::vector<std::string> detach_mounts_under(const std::string& dir, const std::string& keep) {
  std::vector<std::string> found;
  for (const auto& m : mounts_under(dir)) {
    if (m == keep) continue;
    found.push_back(m);
    (void)sys::umount2(m, MNT_DETACH);
  }
  return found;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

class TmpDirStore : public BackingStore {
 public:
  TmpDirStore(std::string spec, std::string base)
      : spec_(std::move(spec)), base_(std::move(base)) {}
  ~TmpDirStore() override {
    if (!dir_.empty()) (void)tear_down();
  }
  std::string name() const override { return spec_; }
  std::string base_dir() const override { return dir_; }

  Result<std::string> set_up() override {
    dir_ = COWLAB_TRY_CTX(make_temp_dir(base_, "cowlab-test-"), "backing store " + spec_);
    return dir_;
  }

  Result<void> tear_down() override {
    if (dir_.empty()) return {};
    std::string dir = dir_;
    dir_.clear();
    std::vector<std::string> problems;
    auto leaked = detach_mounts_under(dir, "");
    if (!leaked.empty()) problems.push_back("mounts left behind: " + join(leaked));
    auto bound = loop_devices_backed_under(dir);
    if (!bound.empty()) {
      problems.push_back("loop devices left bound to files of the store: " + join(bound));
      for (const auto& d : bound) (void)sys::loop_detach(d);
    }
    if (auto r = sys::remove_all(dir); !r.ok()) problems.push_back(r.error().message());
    if (!problems.empty())
      return Error(ErrorKind::kBusy, "backing store " + spec_ + ": " + join(problems));
    return {};
  }

 private:
  std::string spec_;
  std::string base_;
  std::string dir_;
};

// Big enough for graphtest's quota test (25 MiB + 50 MiB writes) with btrfs's DUP metadata and
// above mkfs.xfs's 300 MB minimum; sparse, so it costs only what the test writes.
constexpr off_t kLoopImageBytes = 1024LL * 1024 * 1024;

// A filesystem image on a loop device, mounted: "btrfs-loop" and "xfs-loop" (xfs mounted with
// pquota, the project quota overlay's size option needs).
struct LoopFs {
  const char* spec;     // "btrfs-loop"
  const char* fstype;   // "btrfs"
  const char* mkfs;     // "mkfs.btrfs"
  const char* package;  // where mkfs comes from, for the skip reason
  const char* mount_data;
};
constexpr LoopFs kBtrfsLoop = {"btrfs-loop", "btrfs", "mkfs.btrfs", "btrfs-progs", ""};
constexpr LoopFs kXfsLoop = {"xfs-loop", "xfs", "mkfs.xfs", "xfsprogs", "pquota"};

class LoopFsStore : public BackingStore {
 public:
  explicit LoopFsStore(const LoopFs& fs) : fs_(fs) {}
  ~LoopFsStore() override {
    if (!dir_.empty()) (void)tear_down();
  }
  std::string name() const override { return fs_.spec; }
  std::string base_dir() const override { return dir_; }
  std::string loop_device() const override { return device_; }

  Result<std::string> set_up() override {
    auto r = set_up_steps();
    if (!r.ok()) {
      (void)tear_down();
      return std::move(r).error().with_context(std::string("backing store ") + fs_.spec);
    }
    return mount_point_;
  }

  Result<void> tear_down() override {
    if (dir_.empty()) return {};
    std::vector<std::string> problems;
    auto leaked = detach_mounts_under(dir_, mount_point_);
    if (!leaked.empty()) problems.push_back("mounts left behind: " + join(leaked));
    if (mounted_) {
      // A plain unmount first: EBUSY here means the test left something open in the store.
      auto r = sys::umount2(mount_point_, 0);
      if (!r.ok()) {
        problems.push_back(r.error().message());
        (void)sys::umount2(mount_point_, MNT_DETACH);
      }
      mounted_ = false;
    }
    if (!device_.empty()) {
      // Autoclear detached it with the unmount; this covers a mount that never happened.
      if (auto r = sys::loop_detach(device_); !r.ok()) problems.push_back(r.error().message());
      device_.clear();
    }
    // The kernel may finish an autoclear detach just after the unmount returns.
    std::vector<std::string> bound;
    for (int i = 0; i < 100; ++i) {
      bound = loop_devices_backed_under(dir_);
      if (bound.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!bound.empty()) {
      problems.push_back("loop devices still bound to the image: " + join(bound));
      for (const auto& d : bound) (void)sys::loop_detach(d);
    }
    if (auto r = sys::remove_all(dir_); !r.ok()) problems.push_back(r.error().message());
    dir_.clear();
    if (!problems.empty())
      return Error(ErrorKind::kBusy,
                   std::string("backing store ") + fs_.spec + ": " + join(problems));
    return {};
  }

 private:
  Result<void> set_up_steps() {
    // Tools and kernel support first, so an unusable machine is a clear kNotSupported.
    if (!COWLAB_TRY(sys::filesystem_supported(fs_.fstype)))
      return Error::not_supported(std::string("the kernel has no ") + fs_.fstype +
                                  " (not in /proc/filesystems)");
    auto ctl = sys::lstat_if_exists("/dev/loop-control");
    if (!ctl.ok() || !ctl->has_value())
      return Error::not_supported("no /dev/loop-control: loop devices unavailable");

    dir_ = COWLAB_TRY(make_temp_dir(test_tmp_base(), std::string("cowlab-") + fs_.fstype + "-"));
    image_ = dir_ + "/" + fs_.fstype + ".img";
    mount_point_ = dir_ + "/mnt";
    {
      auto fd = COWLAB_TRY(sys::open(image_, O_WRONLY | O_CREAT | O_EXCL, 0600));
      COWLAB_TRY(sys::ftruncate(fd.get(), kLoopImageBytes));
    }
    std::string out;
    auto rc = sys::run({fs_.mkfs, "-q", "-f", image_}, &out);
    if (!rc.ok() || *rc == 127)
      return Error::not_supported(std::string(fs_.mkfs) + " is not installed (package " +
                                  fs_.package + ")");
    if (*rc != 0)
      return Error(ErrorKind::kSystem, std::string(fs_.mkfs) + " " + image_ + " failed: " + out);
    // Autoclear: the kernel unbinds the device when the mount (its last user) goes away, so
    // even a test process that dies leaves no bound loop device once its mount is gone.
    auto loop = COWLAB_TRY(sys::loop_attach(image_, sys::LoopFlags::kAutoclear));
    device_ = loop.device;
    COWLAB_TRY(sys::mkdir(mount_point_, 0755));
    auto mounted = sys::mount(device_, mount_point_, fs_.fstype, 0, fs_.mount_data);
    // EINVAL for a mount option: a kernel built without that feature (xfs without
    // CONFIG_XFS_QUOTA refuses pquota).  That machine cannot provide this store.
    if (!mounted.ok() && mounted.error().err() == EINVAL && *fs_.mount_data)
      return Error::not_supported(mounted.error().message() + ": the kernel's " + fs_.fstype +
                                  " refuses \"" + fs_.mount_data + "\"");
    COWLAB_TRY(std::move(mounted));
    mounted_ = true;
    return {};  // loop.fd closes here: from now on the mount holds the device
  }

  const LoopFs& fs_;
  std::string dir_;
  std::string image_;
  std::string mount_point_;
  std::string device_;
  bool mounted_ = false;
};

// Sparse file vdev; zpool create needs at least 64 MiB.
constexpr off_t kZpoolVdevBytes = 1024LL * 1024 * 1024;

class ZfsPoolStore : public BackingStore {
 public:
  ~ZfsPoolStore() override {
    if (!dir_.empty()) (void)tear_down();
  }
  std::string name() const override { return "zfs-pool"; }
  std::string base_dir() const override { return dir_; }
  std::map<std::string, std::string> storage_opts() const override {
    return {{"zfs.fsname", pool_}};
  }

  Result<std::string> set_up() override {
    auto r = set_up_steps();
    if (!r.ok()) {
      (void)tear_down();
      return std::move(r).error().with_context("backing store zfs-pool");
    }
    return dir_ + "/root";
  }

  Result<void> tear_down() override {
    if (dir_.empty()) return {};
    std::vector<std::string> problems;
    auto leaked = detach_mounts_under(dir_, "");
    if (!leaked.empty()) problems.push_back("mounts left behind: " + join(leaked));
    if (created_) {
      std::string out;
      auto rc = sys::run({"zpool", "destroy", "-f", pool_}, &out);
      if (!rc.ok() || *rc != 0) problems.push_back("zpool destroy " + pool_ + ": " + out);
      created_ = false;
    }
    if (auto r = sys::remove_all(dir_); !r.ok()) problems.push_back(r.error().message());
    dir_.clear();
    if (!problems.empty())
      return Error(ErrorKind::kBusy, "backing store zfs-pool: " + join(problems));
    return {};
  }

 private:
  Result<void> set_up_steps() {
    auto dev = sys::lstat_if_exists("/dev/zfs");
    if (!dev.ok() || !dev->has_value())
      return Error::not_supported("no /dev/zfs: the zfs module is not loaded");
    dir_ = COWLAB_TRY(make_temp_dir(test_tmp_base(), "cowlab-zfs-"));
    std::string vdev = dir_ + "/vdev.img";
    {
      auto fd = COWLAB_TRY(sys::open(vdev, O_WRONLY | O_CREAT | O_EXCL, 0600));
      COWLAB_TRY(sys::ftruncate(fd.get(), kZpoolVdevBytes));
    }
    // Pool names must start with a letter; the temp dir's random suffix keeps them unique.
    pool_ = "cowlabtest" + dir_.substr(dir_.size() - 6);
    for (auto& c : pool_) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string out;
    auto rc = sys::run(
        {"zpool", "create", "-f", "-o", "cachefile=none", "-O", "mountpoint=none", pool_, vdev},
        &out);
    if (!rc.ok() || *rc == 127)
      return Error::not_supported("zpool is not installed (package zfsutils-linux)");
    if (*rc != 0) return Error(ErrorKind::kSystem, "zpool create " + pool_ + " failed: " + out);
    created_ = true;
    COWLAB_TRY(sys::mkdir(dir_ + "/root", 0755));
    return {};
  }

  std::string dir_;
  std::string pool_;
  bool created_ = false;
};

}  // namespace

std::string test_tmp_base() {
  for (const char* var : {"COWLAB_TEST_TMPDIR", "TMPDIR"}) {
    const char* v = std::getenv(var);
    if (v && *v) return v;
  }
  return "/var/tmp";
}

std::vector<std::string> backing_store_names() {
  return {"tmpdir", "btrfs-loop", "xfs-loop", "zfs-pool", "dir:PATH"};
}

Result<std::unique_ptr<BackingStore>> make_backing_store(const std::string& spec) {
  if (spec == "tmpdir")
    return std::unique_ptr<BackingStore>(new TmpDirStore(spec, test_tmp_base()));
  if (spec == kBtrfsLoop.spec) return std::unique_ptr<BackingStore>(new LoopFsStore(kBtrfsLoop));
  if (spec == kXfsLoop.spec) return std::unique_ptr<BackingStore>(new LoopFsStore(kXfsLoop));
  if (spec == "zfs-pool") return std::unique_ptr<BackingStore>(new ZfsPoolStore());
  if (spec.rfind("dir:", 0) == 0 && spec.size() > 4)
    return std::unique_ptr<BackingStore>(new TmpDirStore(spec, spec.substr(4)));
  return Error::invalid("unknown backing store \"" + spec +
                        "\" (known: " + join(backing_store_names()) + ")");
}

std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  auto mounts = sys::mountinfo();
  if (!mounts.ok()) return out;
  for (const auto& m : *mounts)
    if (under(m.mount_point, dir)) out.push_back(m.mount_point);
  // Deepest first, so detaching in this order never leaves a mount hidden under another.
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() > b.size() : a > b;
  });
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<std::string> loop_devices_backed_under(const std::string& dir) {
  std::vector<std::string> out;
  auto devices = sys::loop_devices();
  if (!devices.ok()) return out;
  for (const auto& d : *devices) {
    std::string file = d.backing_file;
    if (auto pos = file.rfind(" (deleted)"); pos != std::string::npos && pos + 10 == file.size())
      file.resize(pos);
    if (under(file, dir)) out.push_back(d.device);
  }
  return out;
}

}  // namespace cowlab::testing
