// Change detection with Docker's semantics (pkg/archive/changes.go, changes_unix.go).
//
// An entry is Modified when mode, uid, gid, rdev or the security.capability xattr differ, or,
// for non-directories, mtime (seconds equal and either side with 0 ns counts as equal) or
// size differ.  Inode numbers and ctime are never compared.  A directory that is not itself
// changed but contains changes is reported as Modified (before its children), except the
// root.  Results are sorted by path, then kind.
#pragma once

#include <string>
#include <vector>

#include "cowlab/driver.h"
#include "cowlab/result.h"

namespace cowlab {

// Compares two full trees (Docker's ChangesDirs).  `old_dir` "" means an empty tree (all
// entries of `new_dir` are Adds).
Result<std::vector<Change>> changes_dirs(const std::string& new_dir, const std::string& old_dir);

// Changes of an overlay layer computed from its upper dir alone (cost grows with the
// changes, not with the image): `upper` is the layer's diff dir, `lowers` the lower diff dirs
// nearest first.  Whiteouts (0/0 char devices) are Deletes when the name exists below;
// opaque directories delete every lower child they hide.  The result equals changes_dirs of
// the merged view against the view of the lowers, as overlayfs shows them (which ignores the
// opaque xattr on a layer's root).  Redirected directories (redirect_dir) and metacopy-only
// uppers are not understood: with those features on, the overlay driver uses the naive diff,
// as Docker's does.
Result<std::vector<Change>> changes_overlay(const std::string& upper,
                                            const std::vector<std::string>& lowers,
                                            OverlayXattrNs ns);

// Same for an aufs layer (`.wh.` files and `.wh..wh..opq` markers in `upper`).
Result<std::vector<Change>> changes_aufs(const std::string& upper,
                                         const std::vector<std::string>& lowers);

// Bytes of added/modified regular files in `dir` listed in `changes`, each inode once
// (Docker's ChangesSize).
Result<int64_t> changes_size(const std::string& dir, const std::vector<Change>& changes);

void sort_changes(std::vector<Change>& changes);

}  // namespace cowlab
