// OCI layer tars: reading (applying a layer to a directory) and writing (exporting a diff).
//
// The wire format is the OCI image-spec layer format (layer.md): `.wh.<name>` deletes <name>
// from lower layers, `<dir>/.wh..wh..opq` hides every lower child of <dir> and applies first
// wherever it stands in the tar; a whiteout never hides entries of its own layer.  Entries
// whose name starts with `.wh..wh.` are aufs metadata: `.wh..wh.plnk/*` holds hard-link
// targets (extracted to a scratch dir so links into it resolve), the rest is ignored.
//
// Security contract of apply_layer: nothing outside `root` is ever created, changed or
// removed.  Refused with a kSecurity error naming the entry:
//   - names that climb out of the root with ".." after cleaning (a leading "/" is dropped
//     first, so "/etc/passwd" means "etc/passwd" as in Docker and GNU tar, while "/../x" climbs
//     out);
//   - hard links whose target escapes the root;
//   - symlinks whose target, resolved from the link's directory, climbs out of the root
//     (absolute targets are fine: they are relative to the container root);
//   - any entry whose path goes *through* a symlink or hard link created earlier by the same
//     tar ("dir/loophole -> ../../victim" then "dir/loophole/newfile").
// All path resolution is done with openat2(RESOLVE_IN_ROOT) relative to `root`, so even
// symlinks already present in the tree (from a parent layer copied by vfs) cannot lead out.
// Device nodes are created only when the process has CAP_MKNOD in the initial user
// namespace (a node made inside a user namespace could not be opened anyway); otherwise they
// are skipped and counted in ApplyStats::skipped_devices (Docker's behaviour in user
// namespaces).  Fifos need no capability and are always created.
//
// A refused or malformed tar leaves `root` as the entries before the bad one made it (the
// layer store removes such a layer); a refused entry itself has touched nothing.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cowlab/driver.h"
#include "cowlab/io.h"
#include "cowlab/result.h"

namespace cowlab {

// kValidateOnly reads the whole tar and performs every check that depends on the tar alone
// (names, link targets, links through links created earlier in the same tar, malformed
// headers) without touching `root`; the layer store runs it before applying a diff to an
// existing layer, so a bad tar leaves that layer untouched.
enum class ApplyMode { kApply, kValidateOnly };

struct ApplyOptions {
  ApplyMode mode = ApplyMode::kApply;
  WhiteoutFormat format = WhiteoutFormat::kDeleteInPlace;
  OverlayXattrNs overlay_ns = OverlayXattrNs::kTrusted;
  // Scratch directory for `.wh..wh.plnk` targets; must be on the same filesystem as the
  // root (hard links) and inside the store root.  Created (if missing) and removed by
  // apply_layer, which works in a private subdirectory of it; only needed by tars that carry
  // aufs hard-link targets.
  std::string scratch_dir;
  // Name used in error messages ("apply-diff layer 3f2a").
  std::string context;
  // kOverlay: the lower layers' diff dirs, nearest first.  Overlayfs ignores the opaque xattr
  // on the root directory of a lower layer (the root is always merged), so an opaque marker
  // at the top of a tar is applied as a whiteout for every entry of the lower roots instead
  // (and this layer's own top-level directories become opaque).  With the lowers known, an
  // implied parent directory takes the attributes of the lower directory it shadows (as a
  // copy-up would), a whiteout of a name no lower shows is left out, and a whiteout below a
  // lower non-directory hides nothing.  Without them (a parentless layer) none of this applies.
  std::vector<std::string> lower_dirs;
};

struct ApplyStats {
  int64_t size = 0;      // sum of entry sizes (Docker's ApplyDiff return value)
  uint64_t entries = 0;  // tar entries read
  uint64_t skipped_devices = 0;
  uint64_t skipped_xattrs = 0;  // xattrs refused by the filesystem (ENOTSUP/EPERM)
};

// Applies the uncompressed tar stream `tar` to the directory `root` (which must exist).
// Reads `tar` to its end, so a caller's digest of the stream covers every byte.
Result<ApplyStats> apply_layer(const std::string& root, Reader& tar, const ApplyOptions& options);

enum class Compression { kNone, kGzip, kZstd, kXz, kBzip2 };

// Wraps a possibly compressed stream (gzip, zstd or none; detected from the magic bytes)
// into a reader of the uncompressed bytes. If `detected` is given, it receives the kind found
// (kNone: the returned reader hands back the input's bytes unchanged).
Result<std::unique_ptr<Reader>> decompress(std::unique_ptr<Reader> in,
                                           Compression* detected = nullptr);

// Tees everything read through it into a SHA-256. Streams beyond a few MiB are hashed on a
// second thread (the bytes are copied into a bounded queue), so a layer import costs the
// extraction's time, not extraction plus hashing; the result is the same either way.
class DigestReader final : public Reader {
 public:
  explicit DigestReader(Reader& inner);
  ~DigestReader() override;
  Result<size_t> read(void* buf, size_t len) override;
  std::string name() const override;
  // Reads and hashes whatever is left, then returns "sha256:<hex>" of all bytes read.
  Result<std::string> drain_and_digest();
  uint64_t bytes() const { return bytes_; }

 private:
  Reader& inner_;
  struct Hash;
  std::unique_ptr<Hash> hash_;
  uint64_t bytes_ = 0;
};

struct ExportOptions {
  // How whiteouts are stored in the tree being exported.
  WhiteoutFormat format = WhiteoutFormat::kDeleteInPlace;
  OverlayXattrNs overlay_ns = OverlayXattrNs::kTrusted;
  // For kOverlay/kAufs native export: the lower layer directories, nearest first, used to
  // decide whether an opaque directory hides anything (".wh..wh..opq" is emitted only if the
  // directory exists below).
  std::vector<std::string> lower_dirs;
};

// Writes a reproducible OCI layer tar (PAX; entries sorted by path; no atime/ctime; no user
// or group names; whiteouts as empty 0600 regular files with mtime 0) of the changes
// `changes` taken from the tree `dir`: Add/Modify entries are written with their content and
// metadata (mode, uid, gid, mtime, xattrs incl. security.capability; hard links within the
// set as links), Delete entries as `.wh.` whiteouts.
Result<void> export_changes(const std::string& dir, const std::vector<Change>& changes,
                            Writer& out);

// Writes a whole tree as a layer tar (diff against nothing, or a native diff of an
// overlay/aufs upper dir, converting the driver's whiteouts back to OCI form).
Result<void> export_tree(const std::string& dir, const ExportOptions& options, Writer& out);

}  // namespace cowlab
