#!/usr/bin/env bash
# The host demo (what `make run` does until the scenario matrix exists): imports a real
# Debian root filesystem as an image layer on every driver the host kernel runs (vfs,
# overlay on the host filesystem, btrfs on a loop-mounted image), creates two containers on
# it, writes in one, and prints `info`, both containers' `changes` and the space each used.
# Usage: demo_host_drivers.sh COWLAB_BINARY
set -euo pipefail
cowlab=$(readlink -f "$1")
here=$(cd "$(dirname "$0")" && pwd)
tar=$("$here/../../vm-images/minbase-tar.sh")
work=$(mktemp -d /var/tmp/cowlab-demo-XXXXXX)
loopdev=""
cleanup() {
  for r in "$work"/root-*; do [ -d "$r" ] && "$cowlab" --root "$r" wipe >/dev/null 2>&1 || true; done
  mountpoint -q "$work/btrfs" 2>/dev/null && umount "$work/btrfs"
  [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

used_kib() { df -k --output=used "$1" | tail -1 | tr -d ' '; }

printf 'Image layer: %s (%s files, %s)\n' "$tar" "$(tar -tf "$tar" | wc -l)" "$(du -h "$tar" | cut -f1)"

# btrfs needs a btrfs home: a sparse image on a loop device.
truncate -s 4G "$work/btrfs.img"
loopdev=$(losetup -f --show "$work/btrfs.img")
mkfs.btrfs -q "$loopdev"
mkdir -p "$work/btrfs"
mount "$loopdev" "$work/btrfs"

for driver in vfs overlay btrfs; do
  case $driver in
    btrfs) root=$work/btrfs/root-$driver ;;
    *) root=$work/root-$driver ;;
  esac
  c() { "$cowlab" --root "$root" --driver "$driver" "$@"; }
  echo
  echo "==================== $driver ===================="
  t0=$(date +%s.%N)
  c import-layer debian "$tar" >/dev/null
  t1=$(date +%s.%N)
  before=$(used_kib "$root")
  c create-layer --rw --parent debian c1 >/dev/null
  mid=$(used_kib "$root")
  c create-layer --rw --parent debian c2 >/dev/null
  after=$(used_kib "$root")
  m=$(c mount c1)
  echo "container c1 is mounted at $m"
  echo "cowlab-demo" > "$m/etc/hostname"
  echo "written by c1" > "$m/root/hello.txt"
  rm -f "$m/etc/motd"
  chmod 0700 "$m/tmp"
  c unmount c1
  c info
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "import of the image layer: %.2f s\n", b-a}'
  echo "changes of c1 (wrote /etc/hostname, added /root/hello.txt, removed /etc/motd, chmod /tmp):"
  c changes c1 | sed 's/^/  /'
  echo "changes of c2 (untouched): $(c changes c2 | wc -l) entries"
  echo "space used on the backing filesystem when creating each container:"
  echo "  c1: $((mid - before)) KiB   c2: $((after - mid)) KiB   (image: $(du -sh --apparent-size "$tar" | cut -f1))"
  echo "  diffsize c1: $(c diffsize c1) bytes   diffsize c2: $(c diffsize c2) bytes"
  c wipe
done
