#!/usr/bin/env bash
# zfs-module.sh KERNEL_VERSION SRC OBJ OUT — the OpenZFS module for a kernel built from source.
#
# The module must match the ZFS userland of the root the profile boots with (the default profile's,
# vm-images/profiles/debian-6.1.conf ZFS_SELECT), so the zfs-dkms version is that one.  zfs-dkms
# declares the kernels it supports as "Recommends: linux-libc-dev (<< X~)"; when KERNEL_VERSION is
# not below X, nothing is built and OUT/unsupported says why:
#   zfs: not supported by zfs-dkms 2.1.11-1+deb12u1 (declares < 6.3)
# Otherwise the source is configured against the tree (SRC) and its O= build directory (OBJ) the
# way dkms does it (configure --with-config=kernel), built with the host compiler that built the
# kernel, and the stripped modules are written to OUT/*.ko, with OUT/package naming zfs-dkms=VER.
# Progress lines start with "::step ".
source "$(dirname "$0")/../lib.sh"
kver=${1:?usage: zfs-module.sh KERNEL_VERSION SRC OBJ OUT}
src=${2:?}; obj=${3:?}; out=${4:?}
need_tool dpkg-deb strip make gcc
conf=$VM_IMAGES_DIR/profiles/debian-6.1.conf
select=$(sed -n 's/^ZFS_SELECT=//p' "$conf" | tail -n1)
realm=$(sed -n 's/^ROOT_REALM=//p' "$conf" | tail -n1)
[ -n "$select" ] && [ -n "$realm" ] || die "$conf: ZFS_SELECT and ROOT_REALM are required"
export APT_REALM=$realm
step "resolve $select"
papt_update
ver=$(papt -s install --no-install-recommends "$select" 2>/dev/null | awk '$1=="Inst" && $2=="zfs-dkms" {v=$3; gsub(/[()]/,"",v); print v; exit}')
[ -n "$ver" ] || die "cannot resolve $select in the $realm realm"
upper=$(papt_cache show "zfs-dkms=$ver" | sed -n 's/^Recommends: //p' | head -n1 | tr ',' '\n' |
        sed -n 's/.*linux-libc-dev (<< \([^)~]*\)~\{0,1\}).*/\1/p' | head -n1)
mkdir -p "$out"
if [ -n "$upper" ] && ! dpkg --compare-versions "$kver" lt "$upper"; then
  echo "zfs: not supported by zfs-dkms $ver (declares < $upper)" > "$out/unsupported"
  note "$(cat "$out/unsupported")"
  exit 0
fi
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
step "download zfs-dkms=$ver"
papt_download "$work/debs" "zfs-dkms=$ver"
dpkg-deb -x "$work"/debs/zfs-dkms_*.deb "$work/x"
zsrc=$(ls -d "$work"/x/usr/src/zfs-* | head -n1)
[ -d "$zsrc" ] || die "zfs-dkms=$ver holds no /usr/src/zfs-*"
step "configure zfs-dkms $ver against $obj"
(cd "$zsrc" && ./configure --prefix=/usr --with-config=kernel --with-linux="$src" --with-linux-obj="$obj") \
  > "$out/zfs-build.log" 2>&1 || { tail -n 40 "$out/zfs-build.log" >&2; die "configure of zfs-dkms $ver failed for this kernel"; }
step "make zfs modules"
make -C "$zsrc" -j"$(nproc)" >> "$out/zfs-build.log" 2>&1 ||
  { grep -m5 -i 'error' "$out/zfs-build.log" >&2; tail -n 30 "$out/zfs-build.log" >&2; die "make of zfs-dkms $ver failed for this kernel"; }
n=0
while read -r k; do strip --strip-debug -o "$out/$(basename "$k")" "$k"; n=$((n + 1)); done < <(find "$zsrc/module" -name '*.ko')
[ -f "$out/zfs.ko" ] || die "zfs-dkms $ver built no zfs.ko"
echo "zfs-dkms=$ver" > "$out/package"
note "built $n ZFS modules from zfs-dkms $ver"
