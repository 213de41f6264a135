#include "cowlab/harness/accel.h"

#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "cowlab/harness/guest.h"
#include "cowlab/harness/profile.h"
#include "cowlab/sys.h"
#include "process.h"
#include "util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace cowlab::harness {

std::string_view accel_name(AccelKind k) { return k == AccelKind::kKvm ? "kvm" : "tcg"; }

namespace {
std::string host_key() {
  utsname u{};
  ::uname(&u);
  std::string qemu = "unknown";
  std::error_code ec;
  auto qpath = fs::path("/usr/bin/qemu-system-x86_64");
  if (fs::exists(qpath, ec)) qemu = std::to_string(fs::last_write_time(qpath, ec).time_since_epoch().count());
  return std::string(u.release) + "|" + u.version + "|qemu:" + qemu + "|kvm:" + (fs::exists("/dev/kvm", ec) ? "1" : "0");
}
}  // namespace

Accel choose_accel(const ProfileImage& image) {
  if (const char* e = std::getenv("COWLAB_ACCEL"); e && *e) {
    std::string v = e;
    if (v == "kvm") return {AccelKind::kKvm, "forced by COWLAB_ACCEL=kvm"};
    return {AccelKind::kTcg, "forced by COWLAB_ACCEL=" + v};
  }
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return {AccelKind::kTcg, std::string("no usable /dev/kvm (") + std::strerror(errno) + ")"};
  ::close(fd);
  const fs::path cache = cache_dir() / "accel.json";
  const std::string key = host_key();
  if (auto t = detail::read_file(cache); t.ok()) {
    json j = json::parse(*t, nullptr, false);
    if (!j.is_discarded() && j.value("host", "") == key)
      return {j.value("accel", "tcg") == "kvm" ? AccelKind::kKvm : AccelKind::kTcg,
              j.value("reason", "") + " (cached probe)"};
  }
  // /dev/kvm opens: does a guest really boot with it?
  Accel result;
  auto b = boot_bare(image, Accel{AccelKind::kKvm, "probe"}, std::chrono::seconds(20));
  if (b.ok() && b->reached_userspace) {
    result = {AccelKind::kKvm, "kvm probe: " + image.profile + " reached userspace in " +
                                   std::to_string(b->seconds).substr(0, 4) + " s"};
  } else {
    std::string why = b.ok() ? b->reason : b.error().message();
    if (why.size() > 300) why = why.substr(0, 300) + "...";
    for (auto& c : why)
      if (c == '\n') c = ' ';
    result = {AccelKind::kTcg, "/dev/kvm opens but a KVM guest does not boot: " + why};
  }
  if (b.ok()) {
    json j = {{"host", key}, {"accel", accel_name(result.kind)}, {"reason", result.reason}};
    (void)sys::write_file_atomic(cache.string(), j.dump(2));
  }
  return result;
}

}  // namespace cowlab::harness
