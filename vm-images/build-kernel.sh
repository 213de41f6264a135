#!/usr/bin/env bash
# build-kernel.sh OUT — the kernel half of a profile: kernel image, config, modules disk and boot
# initramfs.
#
# Debian profiles (env from resolve.sh): KERNEL_REALM KERNEL_PKG KERNEL_RELEASE, and ZFS_KO_DIR
# with the modules from build-zfs.sh.  Bring-your-own profiles: BYO_KERNEL (image path),
# BYO_MODULES (optional: a lib/modules/RELEASE directory or its parent), BYO_CONFIG (optional).
# Output in OUT: vmlinuz, config (when known), release, modules.ext4 (absent when the kernel has
# no modules), boot.cpio (busybox + the virtio/ext4 modules it must insmod, uncompressed so any
# kernel with initramfs support reads it), modules.txt (what boot.cpio loads).
source "$(dirname "$0")/lib.sh"
out=${1:?usage: build-kernel.sh OUT}
need_tool dpkg-deb depmod mkfs.ext4 cpio
BUSYBOX_BIN=${BUSYBOX_BIN:-/bin/busybox}
file "$BUSYBOX_BIN" 2>/dev/null | grep -q 'statically linked' ||
  die "$BUSYBOX_BIN is not a static busybox (install busybox-static: make deps)"
mkdir -p "$out"
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/stage; mkdir -p "$stage/lib/modules"

if [ -n "${BYO_KERNEL:-}" ]; then
  step "copy bring-your-own kernel $BYO_KERNEL"
  [ -f "$BYO_KERNEL" ] || die "kernel image '$BYO_KERNEL' not found"
  cp "$BYO_KERNEL" "$out/vmlinuz"
  [ -n "${BYO_CONFIG:-}" ] && cp "$BYO_CONFIG" "$out/config"
  # The release string from the bzImage setup header (kernel_version at 0x200 + the u16 at 0x20E).
  release=
  if [ "$(dd if="$BYO_KERNEL" bs=1 skip=$((0x202)) count=4 2>/dev/null)" = HdrS ]; then
    off=$(od -An -tu2 -j $((0x20E)) -N2 "$BYO_KERNEL" | tr -d ' ')
    release=$(dd if="$BYO_KERNEL" bs=1 skip=$((off + 0x200)) count=160 2>/dev/null | tr '\0' '\n' | head -n1 | awk '{print $1}')
  fi
  if [ -n "${BYO_MODULES:-}" ]; then
    [ -d "$BYO_MODULES" ] || die "modules directory '$BYO_MODULES' not found"
    if [ -f "$BYO_MODULES/modules.order" ] || [ -f "$BYO_MODULES/modules.builtin" ] || [ -d "$BYO_MODULES/kernel" ]; then
      src=$BYO_MODULES
    else
      n=$(find "$BYO_MODULES" -mindepth 1 -maxdepth 1 -type d | wc -l)
      [ "$n" = 1 ] || die "modules directory '$BYO_MODULES' holds $n release directories; name one of them"
      src=$(find "$BYO_MODULES" -mindepth 1 -maxdepth 1 -type d)
    fi
    release=$(basename "$src")
    cp -a "$src" "$stage/lib/modules/$release"
  fi
else
  for v in KERNEL_REALM KERNEL_PKG KERNEL_RELEASE; do
    [ -n "${!v:-}" ] || die "build-kernel.sh: $v is not set (run through cowlab vm build)"
  done
  step "download ${KERNEL_PKG%%=*} ${KERNEL_PKG#*=}"
  # KERNEL_PARTS: the packages the image, modules and config moved to in Debian's 6.16 packaging.
  # shellcheck disable=SC2086
  APT_REALM=$KERNEL_REALM papt_download "$work/debs" "$KERNEL_PKG" ${KERNEL_PARTS:-}
  step "unpack kernel and modules"
  for d in "$work"/debs/linux-*.deb; do dpkg-deb -x "$d" "$work/x"; done
  release=$KERNEL_RELEASE
  # Old layout: /boot/vmlinuz-RELEASE and /boot/config-RELEASE; new: beside the modules.
  for f in vmlinuz config; do
    for src in "$work/x/boot/$f-$release" "$work/x/usr/lib/modules/$release/$f"; do
      if [ -f "$src" ]; then cp "$src" "$out/$f"; rm -f "$src"; break; fi
    done
    [ -f "$out/$f" ] || die "${KERNEL_PKG%%=*} ${KERNEL_PARTS:-} hold no $f for $release"
  done
  rm -f "$work/x/usr/lib/modules/$release/System.map"
  for d in "$work/x/lib/modules/$release" "$work/x/usr/lib/modules/$release"; do
    [ -d "$d" ] && mv "$d" "$stage/lib/modules/$release"
  done
  [ -d "$stage/lib/modules/$release" ] || die "${KERNEL_PKG%%=*} has no modules for $release"
fi
echo "${release:-unknown}" > "$out/release"

mods=$stage/lib/modules/${release:-none}
if [ -d "$mods" ]; then
  rm -f "$mods/build" "$mods/source"
  step "decompress modules (plain .ko load much faster under TCG)"
  find "$mods" \( -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' \) -print0 |
    xargs -0 -r -n 64 -P "$(nproc)" sh -c 'for f; do case "$f" in
        *.xz) xz -dq "$f" ;; *.zst) zstd -dq --rm "$f" ;; *.gz) gzip -dq "$f" ;; esac; done' sh
  if [ -n "${ZFS_KO_DIR:-}" ]; then
    mkdir -p "$mods/updates/zfs"
    cp "$ZFS_KO_DIR"/*.ko "$mods/updates/zfs/"
  fi
  depmod -b "$stage" "$release" || die "depmod failed for $release"
  step "modules disk ($(du -sh "$mods" | cut -f1))"
  size_kb=$(( $(du -sk "$stage/lib/modules" | cut -f1) * 12 / 10 + 16384 ))
  mkfs.ext4 -q -F -O ^has_journal -L cowlab-mods -E root_owner=0:0 -d "$stage/lib/modules" \
    "$work/modules.ext4" "${size_kb}k" >/dev/null || die "mkfs.ext4 of the modules disk failed"
  mv "$work/modules.ext4" "$out/modules.ext4"
fi

step "boot initramfs"
ird=$work/initrd; mkdir -p "$ird"/{bin,dev,proc,sys,newroot,etc,lib/modules}
cp "$BUSYBOX_BIN" "$ird/bin/busybox"
cp "$VM_IMAGES_DIR/boot/init.sh" "$ird/init"; chmod 755 "$ird/init"
: > "$ird/etc/cowlab-modules"
if [ -d "$mods" ]; then
  # Modules the initramfs loads, dependencies first; those built in (modules.builtin) are skipped.
  want="virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk virtio_console ext4"
  awk -v want="$want" '
    BEGIN { n = split(want, w, " ") }
    function norm(p,  b) { b = p; sub(/.*\//, "", b); sub(/\.ko$/, "", b); gsub(/-/, "_", b); return b }
    FILENAME ~ /modules.builtin$/ { builtin[norm($1)] = 1; next }
    { key = $1; sub(/:$/, "", key); path[norm(key)] = key; deps[norm(key)] = ""
      for (i = 2; i <= NF; i++) deps[norm(key)] = deps[norm(key)] " " norm($i) }
    function load(m,  d, k, i) {
      if (m in done || m in builtin || !(m in path)) return
      done[m] = 1; k = split(deps[m], d, " ")
      for (i = k; i >= 1; i--) load(d[i])
      print path[m]
    }
    END { for (i = 1; i <= n; i++) load(w[i]) }
  ' "$mods/modules.builtin" "$mods/modules.dep" > "$work/modlist"
  while read -r p; do
    cp "$mods/$p" "$ird/lib/modules/"
    basename "$p" >> "$ird/etc/cowlab-modules"
  done < "$work/modlist"
fi
cp "$ird/etc/cowlab-modules" "$out/modules.txt"
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$out/boot.cpio" ||
  die "cpio of the boot initramfs failed"
note "kernel $release: $(du -h "$out/vmlinuz" | cut -f1) image, boot initramfs $(du -h "$out/boot.cpio" | cut -f1) loading $(wc -l < "$out/modules.txt") modules"
