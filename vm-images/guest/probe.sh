#!/bin/bash
# Capability probe, run once per built profile by `cowlab vm profiles` (result cached).
# Writes one JSON line per capability to $COWLAB_RESULTS: {"cap":..., "ok":..., "detail":...}.
out=${COWLAB_RESULTS:-/dev/stdout}
cap() { printf '{"cap":"%s","ok":%s,"detail":"%s"}\n' "$1" "$2" "$(printf '%s' "$3" | tr -d '"\\' | tr '\n' ' ')" >> "$out"; }
fs_cap() {  # name module fstype
  modprobe -q "$2" 2>/dev/null
  if grep -qw "$3" /proc/filesystems; then cap "$1" true "$3 in /proc/filesystems"; else cap "$1" false "no $3 filesystem (modprobe $2 failed)"; fi
}
dm_cap() {  # name module target
  modprobe -q "$2" 2>/dev/null
  t=$(dmsetup targets 2>/dev/null | awk -v t="$3" '$1==t {print $1, $2}')
  if [ -n "$t" ]; then cap "$1" true "$t"; else cap "$1" false "no $3 device-mapper target"; fi
}
dm_cap dm-thin dm-thin-pool thin-pool
dm_cap dm-flakey dm-flakey flakey
dm_cap dm-delay dm-delay delay
dm_cap dm-log-writes dm-log-writes log-writes
fs_cap btrfs btrfs btrfs
fs_cap overlay overlay overlay
fs_cap xfs xfs xfs
fs_cap aufs aufs aufs
if modprobe -q zfs 2>/dev/null && [ -r /sys/module/zfs/version ]; then
  cap zfs true "module $(cat /sys/module/zfs/version), userland $(zfs version 2>/dev/null | head -n1)"
else
  cap zfs false "modprobe zfs failed: $(modprobe zfs 2>&1 | head -n1)"
fi
# The new mount API (fsopen(2), syscall 430 on x86_64): a descriptor back means it is there.
r=$(perl -e 'my $t = "tmpfs"; my $fd = syscall(430, $t, 0); print $fd >= 0 ? "ok" : ($!{ENOSYS} ? "ENOSYS" : "err $!")' 2>&1)
if [ "$r" = ok ]; then cap new-mount-api true "fsopen(2) works"; else cap new-mount-api false "fsopen(2): $r"; fi
cap kernel true "$(uname -r)"
