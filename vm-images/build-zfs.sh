#!/usr/bin/env bash
# build-zfs.sh OUT — build the OpenZFS kernel modules for one kernel from Debian's zfs-dkms source.
#
# Env (from resolve.sh): KERNEL_REALM KERNEL_RELEASE HEADER_PKGS COMPILER_PKGS ZFS_DKMS_PKG
# ZFS_UPSTREAM BUILDER_SUITES.  The build runs in a throwaway mmdebstrap chroot of the kernel's own
# suite (so bullseye's 5.10 is built with bullseye's gcc-10), the way zfs-dkms' dkms.conf does it:
# configure --with-config=kernel against the Debian headers, then make.  Output: OUT/*.ko
# (debug info stripped), OUT/zfs-build.log.  The host's apt and /usr/src are never touched.
source "$(dirname "$0")/lib.sh"
out=${1:?usage: build-zfs.sh OUT}
for v in KERNEL_REALM KERNEL_RELEASE HEADER_PKGS ZFS_DKMS_PKG ZFS_UPSTREAM BUILDER_SUITES; do
  [ -n "${!v:-}" ] || die "build-zfs.sh: $v is not set (run through cowlab vm build)"
done
need_tool mmdebstrap dpkg-deb strip
mkdir -p "$out"
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

step "download zfs-dkms ${ZFS_DKMS_PKG#*=} and headers for $KERNEL_RELEASE"
# shellcheck disable=SC2086
APT_REALM=$KERNEL_REALM papt_download "$work/debs" $ZFS_DKMS_PKG $HEADER_PKGS
# The headers are unpacked, not installed (the backports headers depend on the kernel image); their
# own dependencies (libc, libelf, libssl, the compiler) are installed in the chroot instead.
deps=$(for d in "$work"/debs/linux-*.deb; do dpkg-deb -f "$d" Depends; done | tr ',' '\n' |
       sed 's/([^)]*)//g; s/|.*//; s/[[:space:]]//g; s/:any$//' | grep -v -E '^(linux-|$)' | sort -u)
gcc=$(tr ' ' '\n' <<<"${COMPILER_PKGS:-}" | sed -n 's/^\(gcc-[0-9]*\)=.*/\1/p')
include=$(printf '%s\n' build-essential file perl $gcc $deps | awk 'NF' | sort -u | paste -sd,)
common=$(ls "$work"/debs | sed -n 's/^linux-headers-\(.*-common\)_.*/\1/p' | head -n1)
[ -n "$common" ] || die "no linux-headers-*-common package among: $HEADER_PKGS"

cat > "$work/build.sh" <<SH
#!/bin/sh
set -e
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
cd /tmp/cowlab-zfs/src/usr/src/zfs-$ZFS_UPSTREAM
echo "== configure"; date
./configure --prefix=/usr --with-config=kernel \\
  --with-linux=/usr/src/linux-headers-$common --with-linux-obj=/usr/src/linux-headers-$KERNEL_RELEASE
echo "== make"; date
make -j\$(nproc)
echo "== done"; date
mkdir -p /tmp/cowlab-zfs/ko
find module -name '*.ko' -exec cp {} /tmp/cowlab-zfs/ko/ \;
SH
chmod +x "$work/build.sh"

# Unpack beside the chroot and copy only usr/: the headers debs also carry lib/modules/*/build, and
# unpacking that over a merged-/usr chroot would replace its /lib symlink with a directory.
for d in "$work"/debs/linux-*.deb; do dpkg-deb -x "$d" "$work/hdr"; done

step "build chroot ($BUILDER_SUITES) + configure + make for $KERNEL_RELEASE (several minutes)"
mkdir -p "$work/ko"
# shellcheck disable=SC2086
mapfile -t sources < <(mm_sources $BUILDER_SUITES)
# The builder chroot follows the host's own apt policy on Release freshness.  A host whose
# mirror is a frozen snapshot sets Acquire::Check-Valid-Until "false" (these machines do, in
# apt.conf.d); mmdebstrap's apt reads no host configuration, so without this it refuses a suite
# whose Release is past its Valid-Until ("Release file for .../unstable/InRelease is expired"):
# unstable's expires within a week, and debian-unstable's module could not be built at all.
aptopts=()
eval "$(apt-config shell host_valid_until Acquire::Check-Valid-Until)"
[ "${host_valid_until:-true}" != false ] || aptopts+=(--aptopt='Acquire::Check-Valid-Until "false"')
if ! mmdebstrap --mode=root --variant=apt --skip=cleanup/apt/lists --include="$include" \
    "${aptopts[@]}" \
    --customize-hook='mkdir -p "$1/tmp/cowlab-zfs/debs" "$1/tmp/cowlab-zfs/ko"' \
    --customize-hook="cp -a $work/hdr/usr/. \"\$1/usr/\"" \
    --customize-hook="dpkg-deb -x $work/debs/zfs-dkms_*.deb \"\$1/tmp/cowlab-zfs/src\"" \
    --customize-hook="copy-in $work/build.sh /tmp/cowlab-zfs" \
    --customize-hook='chroot "$1" /tmp/cowlab-zfs/build.sh > "$1/tmp/cowlab-zfs/build.log" 2>&1 || { tail -n 60 "$1/tmp/cowlab-zfs/build.log"; exit 1; }' \
    --customize-hook="sync-out /tmp/cowlab-zfs/ko $work/ko" \
    --customize-hook="copy-out /tmp/cowlab-zfs/build.log $work" \
    "${BUILDER_SUITES%% *}" /dev/null "${sources[@]}" >"$work/mmdebstrap.log" 2>&1; then
  tail -n 80 "$work/mmdebstrap.log" >&2
  die "ZFS module build for $KERNEL_RELEASE failed"
fi
ls "$work"/ko/zfs.ko >/dev/null 2>&1 || die "ZFS build produced no zfs.ko (see build log)"
step "strip modules"
for k in "$work"/ko/*.ko; do strip --strip-debug -o "$out/$(basename "$k")" "$k"; done
cp "$work/build.log" "$out/zfs-build.log"
for k in "$out"/*.ko; do
  vm=$(modinfo -F vermagic "$k" 2>/dev/null | awk '{print $1}')
  [ "$vm" = "$KERNEL_RELEASE" ] || die "$(basename "$k") has vermagic '$vm', expected $KERNEL_RELEASE"
done
note "built $(ls "$out"/*.ko | wc -l) modules, $(du -ch "$out"/*.ko | tail -n1 | cut -f1)"
