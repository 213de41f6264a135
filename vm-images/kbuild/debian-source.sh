#!/usr/bin/env bash
# debian-source.sh SERIES OUT — fetch and unpack Debian's linux-source-SERIES package.
#
# The package is resolved in each apt realm of lib.sh in turn (bookworm first: it has 6.1 and,
# through bookworm-backports, 6.12; then bullseye for 5.10), downloaded with `apt-get download`
# from the machine-derived sources (apt-sources.sh) and unpacked into OUT:
#   OUT/linux/            the kernel tree (Debian's patches already applied)
#   OUT/debian-configs/   Debian's own configs from the package (config.amd64_none_amd64.xz ...)
#   OUT/package           "linux-source-SERIES=VERSION"
#   OUT/deb.sha256        sha256 of the .deb (the tree's identity)
# Prints PACKAGE=linux-source-SERIES=VERSION once resolved; progress lines start with "::step "
# (both read by `cowlab kernel build`).
source "$(dirname "$0")/../lib.sh"
series=${1:?usage: debian-source.sh SERIES OUT}
out=${2:?usage: debian-source.sh SERIES OUT}
[[ "$series" =~ ^[0-9]+\.[0-9]+$ ]] || die "debian:$series: a series is MAJOR.MINOR (e.g. debian:6.1)"
need_tool apt-get dpkg-deb tar xz
pkg=linux-source-$series
found=
for realm in ${COWLAB_SOURCE_REALMS:-bookworm bullseye}; do
  export APT_REALM=$realm
  step "resolve $pkg ($realm)"
  papt_update
  ver=$(papt_cache policy "$pkg" 2>/dev/null | awk '/Candidate:/{print $2}')
  if [ -n "$ver" ] && [ "$ver" != "(none)" ]; then found=$realm; break; fi
done
[ -n "$found" ] || die "debian:$series: no package $pkg in the reachable suites (tried realms: ${COWLAB_SOURCE_REALMS:-bookworm bullseye})"
echo "PACKAGE=$pkg=$ver"
# COWLAB_SOURCE_ONLY_RESOLVE=1: the version only (the caller reuses an unpacked tree of it).
[ -z "${COWLAB_SOURCE_ONLY_RESOLVE:-}" ] || exit 0
mkdir -p "$out"
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
step "download $pkg=$ver"
papt_download "$work/debs" "$pkg=$ver"
deb=$(ls "$work"/debs/*.deb | head -n1)
step "unpack $(basename "$deb") ($(du -h "$deb" | cut -f1))"
dpkg-deb -x "$deb" "$work/x"
tarball=$(ls "$work"/x/usr/src/linux-source-*.tar.* 2>/dev/null | head -n1)
[ -n "$tarball" ] || die "$pkg=$ver holds no linux-source tarball under /usr/src"
mkdir -p "$work/tree"
tar -xf "$tarball" -C "$work/tree"
top=$(ls "$work/tree" | head -n1)
[ -f "$work/tree/$top/Makefile" ] || die "$pkg=$ver: the tarball has no kernel Makefile at its top"
rm -rf "$out/linux" "$out/debian-configs"
mv "$work/tree/$top" "$out/linux"
if [ -d "$work"/x/usr/src/linux-config-"$series" ]; then
  mv "$work"/x/usr/src/linux-config-"$series" "$out/debian-configs"
fi
sha256sum "$deb" | cut -d' ' -f1 > "$out/deb.sha256"
echo "$pkg=$ver" > "$out/package"
note "unpacked $pkg=$ver ($(du -sh "$out/linux" | cut -f1))"
