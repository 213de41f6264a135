// Names and helpers shared by the layer applier, the exporter and change detection.  Internal
// to drivers/core: the public contract is cowlab/archive.h and cowlab/changes.h.
#pragma once

#include <locale.h>
#include <sys/stat.h>

#include <optional>
#include <string>
#include <string_view>

#include "cowlab/driver.h"

namespace cowlab::archive_internal {

// A UTF-8 LC_CTYPE on this thread while it lives (uselocale(3)); hold one for the life of every
// libarchive reader or writer.  libarchive converts a pax "path"/"linkpath" record -- UTF-8 by
// POSIX -- to the current locale's charset, and writes names the other way; in the C locale,
// where cowlab usually runs (services, CI, guests have no LANG), every non-ASCII name fails with
// "Pathname can't be converted from UTF-8 to current locale", and the applier treats that
// warning as the error it is.  Debian's own minbase tar has such names (ca-certificates'
// NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem).  Linux names are bytes; with a UTF-8 charset the
// conversion is the identity.  Without a C.UTF-8 locale the thread keeps its own (and such a
// name is refused, naming the cause, as before).
class Utf8Ctype {
 public:
  Utf8Ctype() : loc_(newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0))) {
    if (loc_) prev_ = uselocale(loc_);
  }
  ~Utf8Ctype() {
    if (loc_) {
      uselocale(prev_);
      freelocale(loc_);
    }
  }
  Utf8Ctype(const Utf8Ctype&) = delete;
  Utf8Ctype& operator=(const Utf8Ctype&) = delete;

 private:
  locale_t loc_;
  locale_t prev_ = LC_GLOBAL_LOCALE;
};

// image-spec layer.md "Whiteouts"; aufs metadata names (moby pkg/archive/whiteouts.go).
inline constexpr std::string_view kWhiteoutPrefix = ".wh.";
inline constexpr std::string_view kWhiteoutMetaPrefix = ".wh..wh.";
inline constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
inline constexpr std::string_view kPlnkDir = ".wh..wh.plnk";
inline constexpr const char* kCapabilityXattr = "security.capability";

inline bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// "trusted.overlay.opaque" or "user.overlay.opaque".
inline std::string overlay_opaque_xattr(OverlayXattrNs ns) {
  return ns == OverlayXattrNs::kUser ? "user.overlay.opaque" : "trusted.overlay.opaque";
}

// Overlay's own metadata (opaque, redirect, origin, metacopy, ...): never taken from a tar and
// never written to one.  trusted.overlay.* always; user.overlay.* too, because a tree that is
// an overlay layer under userxattr keeps its metadata there.
inline bool is_overlay_xattr(std::string_view name) {
  return starts_with(name, "trusted.overlay.") || starts_with(name, "user.overlay.");
}

// An overlayfs whiteout: a character device with device number 0/0 (Documentation/
// filesystems/overlayfs.rst, "whiteouts and opaque directories").
inline bool is_overlay_whiteout(const struct stat& st) {
  return S_ISCHR(st.st_mode) && st.st_rdev == 0;
}

// Cleans a tar path the way filepath.Clean does for a relative name: empty and "."
// components vanish, ".." removes the previous one.  A leading "/" is dropped first, so
// "/etc/passwd" is "etc/passwd" (relative to the layer root, as Docker and GNU tar treat it)
// while "/../x" climbs out.  std::nullopt when the name climbs above the root; "" is the root.
std::optional<std::string> clean_path(std::string_view name);

// "a/b" for "a/b/c", "" for "c".
inline std::string_view parent_of(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}
inline std::string_view base_of(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}
inline std::string join_path(std::string_view dir, std::string_view name) {
  if (dir.empty()) return std::string(name);
  std::string out;
  out.reserve(dir.size() + 1 + name.size());
  out.append(dir).append("/").append(name);
  return out;
}

}  // namespace cowlab::archive_internal
