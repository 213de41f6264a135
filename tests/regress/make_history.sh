#!/bin/bash
# Builds the synthetic kernel history of the bisection test from Debian's linux-source-6.1:
#   base   Debian's tree as packaged                              (good)
#   c1-c5  harmless: comments in compiled files, docs
#   c6     does not compile (a stray token in fs/overlayfs/util.c)   -> must be skipped
#   c7     repairs c6
#   c8     harmless
#   c9     THE CULPRIT: ovl_set_attr gives copied-up regular files mode 0644 (copy-up drops the mode)
#   c10-c12 harmless                                                (c12: bad)
# Usage: make_history.sh DIR   (prints "BASE CULPRIT BROKEN" commit hashes on the last line).
# The tarball is fetched once with apt-get download (from the machine's own apt sources) and kept
# in DIR/../; the repository is rebuilt only when missing.
set -euo pipefail
dir=$1
cache=$(dirname "$dir")
mkdir -p "$cache"
if [ ! -d "$dir/.git" ] || ! git -C "$dir" rev-parse -q --verify refs/tags/synthetic-bad >/dev/null; then
  rm -rf "$dir" "$dir.tmp"
  deb=$(ls "$cache"/linux-source-6.1_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    (cd "$cache" && apt-get download -q linux-source-6.1 >&2)
    deb=$(ls "$cache"/linux-source-6.1_*.deb | head -1)
  fi
  mkdir -p "$dir.tmp"
  # The package holds usr/src/linux-source-6.1.tar.xz.
  dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards './usr/src/linux-source-6.1.tar.xz' \
    | tar -xJ -C "$dir.tmp" --strip-components=1
  cd "$dir.tmp"
  export GIT_AUTHOR_NAME="cowlab test" GIT_AUTHOR_EMAIL="test@cowlab.invalid" \
         GIT_COMMITTER_NAME="cowlab test" GIT_COMMITTER_EMAIL="test@cowlab.invalid" \
         GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"
  git init -q -b main .
  git config gc.auto 0
  # Debian's packaged .gitignore ignores everything at the top level ("/*"): add by force.
  git add -A -f >/dev/null
  git commit -q -m "base: Debian linux-source-6.1 as packaged"
  git tag synthetic-good
  n=0
  commit() { n=$((n + 1)); git commit -q -am "c$n: $1"; }
  comment() { printf '\n/* cowlab synthetic history: %s */\n' "$2" >> "$1"; }
  comment fs/overlayfs/super.c "harmless 1";        commit "overlayfs: comment in super.c"
  echo "cowlab synthetic history" >> Documentation/filesystems/overlayfs.rst; commit "docs: overlayfs note"
  comment fs/ext4/super.c "harmless 3";             commit "ext4: comment in super.c"
  comment fs/overlayfs/readdir.c "harmless 4";      commit "overlayfs: comment in readdir.c"
  comment kernel/panic.c "harmless 5";              commit "panic: comment"
  echo "cowlab_synthetic_break" >> fs/overlayfs/util.c; commit "overlayfs: util.c does not compile"
  sed -i '$ d' fs/overlayfs/util.c;                 commit "overlayfs: util.c compiles again"
  comment fs/overlayfs/inode.c "harmless 8";        commit "overlayfs: comment in inode.c"
  grep -q '			.ia_mode = stat->mode,' fs/overlayfs/copy_up.c
  sed -i 's|^\t\t\t.ia_mode = stat->mode,$|\t\t\t.ia_mode = S_ISREG(stat->mode) ? S_IFREG \| 0644 : stat->mode,|' fs/overlayfs/copy_up.c
  git diff --quiet && { echo "make_history.sh: the copy-up line was not changed" >&2; exit 1; }
  commit "overlayfs: copy-up sets regular files to 0644"
  git tag synthetic-culprit
  comment fs/overlayfs/namei.c "harmless 10";       commit "overlayfs: comment in namei.c"
  comment fs/namei.c "harmless 11";                 commit "vfs: comment in namei.c"
  comment fs/overlayfs/dir.c "harmless 12";         commit "overlayfs: comment in dir.c"
  git tag synthetic-bad
  git rev-parse HEAD~6 | xargs git tag synthetic-broken
  cd - >/dev/null
  mv "$dir.tmp" "$dir"
fi
echo "$(git -C "$dir" rev-parse synthetic-good) $(git -C "$dir" rev-parse synthetic-culprit) $(git -C "$dir" rev-parse synthetic-broken)"
