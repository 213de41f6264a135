#!/bin/busybox sh
# /init of the cowlab boot initramfs (busybox, one per kernel profile).
#
# Loads the few modules needed to see the disks (virtio PCI/blk/console; none on a kernel with
# everything built in), mounts the root disk (serial "cowlab-root", ext4; the host opens it with
# snapshot=on, so writes are thrown away), the kernel's modules disk (serial "cowlab-mods") on
# /usr/lib/modules, moves the per-run payload (/cowlab, appended to this initramfs by the harness)
# to a tmpfs at /run/cowlab, and switch_roots into /run/cowlab/agent.sh.
#
# cowlab.mode=bare on the kernel command line stops right after userspace starts: the reference
# "bare busybox initramfs" boot used to probe acceleration and as the benchmark baseline.
export PATH=/bin
/bin/busybox mount -t proc proc /proc 2>/dev/null || { /bin/busybox mkdir -p /proc && /bin/busybox mount -t proc proc /proc; }
case " $(/bin/busybox cat /proc/cmdline) " in
  *" cowlab.mode=bare "*)
    echo "COWLAB-BARE-READY"
    /bin/busybox poweroff -f ;;
esac
/bin/busybox --install -s /bin
mkdir -p /sys /dev /newroot
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

fail() {
  echo "COWLAB-INIT-ERROR: $*"
  echo "COWLAB-INIT-ERROR: block devices: $(cd /sys/block 2>/dev/null && echo *)"
  sync; poweroff -f; sleep 5; echo o > /proc/sysrq-trigger; while :; do sleep 60; done
}

if [ -f /etc/cowlab-modules ]; then
  while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /etc/cowlab-modules
fi

# Find a virtio disk by the serial the harness gave it.
disk_by_serial() {
  for b in /sys/block/vd*; do
    [ -f "$b/serial" ] && [ "$(cat "$b/serial")" = "$1" ] && { echo "/dev/${b##*/}"; return 0; }
  done
  return 1
}
i=0
until root=$(disk_by_serial cowlab-root); do
  i=$((i + 1)); [ $i -gt 400 ] && fail "no disk with serial cowlab-root after 20 s (virtio-blk missing from the kernel?)"
  sleep 0.05
done
mount -t ext4 -o rw,noatime "$root" /newroot || fail "cannot mount root $root as ext4"
if mods=$(disk_by_serial cowlab-mods); then
  mkdir -p /newroot/usr/lib/modules
  mount -t ext4 -o ro "$mods" /newroot/usr/lib/modules || fail "cannot mount modules disk $mods"
fi
mount -t tmpfs -o mode=0755,size=50% tmpfs /newroot/run || fail "cannot mount tmpfs on /run"
[ -d /cowlab ] || fail "no /cowlab payload in the initramfs"
mv /cowlab /newroot/run/cowlab || fail "cannot move the payload to /run/cowlab"
# The guest's own mounts are made here with static busybox: under TCG every exec of the root's
# dynamically linked tools costs tens of milliseconds, and this is on every boot's path.
mount --move /dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
ln -sf /proc/self/fd /newroot/dev/fd; ln -sf /proc/self/fd/0 /newroot/dev/stdin
ln -sf /proc/self/fd/1 /newroot/dev/stdout; ln -sf /proc/self/fd/2 /newroot/dev/stderr
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
exec switch_root /newroot /bin/bash /run/cowlab/agent.sh
fail "switch_root failed"
