#!/usr/bin/env bash
# build-root.sh OUT — the guest root filesystem of a profile: Debian bookworm (mmdebstrap minbase)
# with the storage tools, the profile's ZFS userland and cowlab's runtime libraries.
#
# Env (from resolve.sh): ROOT_REALM ROOT_SUITES BASE_PKGS RUNTIME_PKGS ZFS_USERLAND; COWLAB_BIN
# (optional) is checked with ldd inside the new root: every library must resolve.
# Output in OUT: root.ext4 (read-only base image, no journal: guests only ever write to a
# throwaway snapshot of it), packages.txt (name=version of every installed package).
source "$(dirname "$0")/lib.sh"
out=${1:?usage: build-root.sh OUT}
for v in ROOT_SUITES BASE_PKGS ZFS_USERLAND; do
  [ -n "${!v:-}" ] || die "build-root.sh: $v is not set (run through cowlab vm build)"
done
need_tool mmdebstrap mkfs.ext4
mkdir -p "$out"
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

include=$(printf '%s\n' $BASE_PKGS ${RUNTIME_PKGS:-} $ZFS_USERLAND | awk 'NF' | paste -sd,)
# shellcheck disable=SC2086
mapfile -t sources < <(mm_sources $ROOT_SUITES)
step "mmdebstrap bookworm root ($(wc -w <<<"$BASE_PKGS ${RUNTIME_PKGS:-} $ZFS_USERLAND") packages + minbase)"
if ! mmdebstrap --mode=root --variant=minbase --include="$include" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='chroot "$1" dpkg-query -W -f "\${Package}=\${Version}\n" > "$1/.cowlab-packages"' \
    bookworm "$root" "${sources[@]}" >"$work/mmdebstrap.log" 2>&1; then
  tail -n 60 "$work/mmdebstrap.log" >&2
  die "mmdebstrap of the guest root failed"
fi
mv "$root/.cowlab-packages" "$out/packages.txt"

step "configure root for udev-less guests"
echo cowlab-guest > "$root/etc/hostname"
mkdir -p "$root/etc/lvm"
cat > "$root/etc/lvm/lvmlocal.conf" <<'LVM'
# cowlab guests run without udev by default: LVM manages device nodes itself.
activation {
	udev_sync = 0
	udev_rules = 0
}
devices {
	obtain_device_list_from_udev = 0
}
LVM
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
mkdir -p "$root/usr/lib/modules" "$root/run" "$root/tmp"

if [ -n "${COWLAB_BIN:-}" ]; then
  step "check cowlab's runtime libraries resolve in the root"
  cp "$COWLAB_BIN" "$root/tmp/cowlab-ldd-check"
  missing=$(chroot "$root" ldd /tmp/cowlab-ldd-check 2>&1 | grep 'not found' || true)
  rm -f "$root/tmp/cowlab-ldd-check"
  [ -z "$missing" ] || die "libraries of $COWLAB_BIN missing from the guest root: $missing"
fi

used_kb=$(du -sk "$root" | cut -f1)
size_kb=$(( used_kb * 5 / 4 + 1024 * 1024 ))
step "root.ext4 ($((used_kb / 1024)) MiB used, $((size_kb / 1024)) MiB image)"
mkfs.ext4 -q -F -O ^has_journal -L cowlab-root -E root_owner=0:0 -d "$root" "$work/root.ext4" "${size_kb}k" >/dev/null ||
  die "mkfs.ext4 of the root failed"
chmod 0444 "$work/root.ext4"
mv "$work/root.ext4" "$out/root.ext4"
note "root: $(wc -l < "$out/packages.txt") packages"
