#include "core/refcount.h"

#include "cowlab/sys.h"

namespace cowlab {

int RefCounter::increment(const std::string& path) {
  Entry& e = counts_[path];
  if (!e.checked) {
    e.checked = true;
    if (e.count == 0 && is_mounted_(path)) e.count = 1;
  }
  return ++e.count;
}

int RefCounter::decrement(const std::string& path) {
  Entry& e = counts_[path];
  if (!e.checked) {
    e.checked = true;
    if (e.count == 0 && is_mounted_(path)) e.count = 1;
  }
  if (e.count > 0) --e.count;
  int c = e.count;
  if (c == 0) counts_.erase(path);
  return c;
}

int RefCounter::count(const std::string& path) const {
  auto it = counts_.find(path);
  return it == counts_.end() ? 0 : it->second.count;
}

bool path_is_mounted(const std::string& path) {
  auto r = sys::is_mountpoint(path);
  return r.ok() && *r;
}

bool path_never_mounted(const std::string&) { return false; }

}  // namespace cowlab
