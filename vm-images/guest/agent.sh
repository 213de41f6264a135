#!/bin/bash
# The cowlab guest agent: PID 1 of every guest after the boot initramfs switch_roots into the
# Debian root.  The harness sends it with each run (appended cpio, /run/cowlab/agent.sh), next to
# job.env (settings), cmd.sh (the command) and payload/ (files for the command).
#
# It reports on virtio-serial ports, found by name in /sys/class/virtio-ports:
#   cowlab.ctl   JSON events: agent (booted), start, hb (heartbeat), exit
#   cowlab.out   the command's stdout        cowlab.err   its stderr
#   cowlab.rec   $COWLAB_RESULTS: JSON lines written by the command
#   cowlab.kmsg  the kernel log (/dev/kmsg), all levels
# and, when the harness hands out work on request, reads from
#   cowlab.queue $COWLAB_QUEUE: one line per {"event":"next"} the command writes (empty: none)
# then powers the guest off (sysrq o).  Exiting would panic the kernel, so it never exits.
set +e
export PATH=/run/cowlab/payload/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 SHELL=/bin/bash
# /proc, /sys, /dev (+pts, shm), /tmp and /run were mounted by the boot initramfs.  Builtins only
# until the command starts: every exec of a dynamically linked tool is slow under TCG.
[ -e /proc/self ] || mount -t proc proc /proc
[ -e /sys/class ] || mount -t sysfs sysfs /sys
[ -e /proc/sys/kernel/hostname ] && echo cowlab-guest > /proc/sys/kernel/hostname
read -r release < /proc/sys/kernel/osrelease
uptime() { local u; read -r u _ < /proc/uptime; echo "$u"; }
source /run/cowlab/job.env

poweroff_now() {
  sync
  echo o > /proc/sysrq-trigger 2>/dev/null
  # Kernels without a power-off method halt here; the harness quits QEMU after the exit event.
  while :; do sleep 3600; done
}

declare -A port
for p in /sys/class/virtio-ports/vport*; do
  [ -f "$p/name" ] && read -r n < "$p/name" && port[$n]=/dev/${p##*/}
done
if [ -z "${port[cowlab.ctl]:-}" ]; then
  echo "COWLAB-AGENT-ERROR: no virtio-serial port cowlab.ctl (virtio_console missing?)" > /dev/console
  poweroff_now
fi
exec 3>"${port[cowlab.ctl]}"
emit() { printf '%s\n' "$1" >&3; }
emit "{\"event\":\"agent\",\"kernel\":\"$release\",\"uptime\":$(uptime)}"
[ -n "${port[cowlab.kmsg]:-}" ] && cat /dev/kmsg > "${port[cowlab.kmsg]}" 2>/dev/null &

# Scratch disks, by the serial the harness gave them.
disks=""
[ "${COWLAB_NDISKS:-0}" -gt 0 ] && mkdir -p /dev/cowlab
for ((i = 0; i < ${COWLAB_NDISKS:-0}; i++)); do
  for b in /sys/block/vd*; do
    serial=; read -r serial < "$b/serial" 2>/dev/null
    if [ "$serial" = "cowlab-scratch$i" ]; then
      ln -sf "/dev/${b##*/}" "/dev/cowlab/scratch$i"
      disks="$disks /dev/${b##*/}"
    fi
  done
done
export COWLAB_DISKS=${disks# }
export COWLAB_PAYLOAD=/run/cowlab/payload COWLAB_RESULTS=${port[cowlab.rec]:-/dev/null}
export COWLAB_QUEUE=${port[cowlab.queue]:-}
[ -d "$COWLAB_PAYLOAD" ] || mkdir -p "$COWLAB_PAYLOAD"

if [ "${COWLAB_UDEV:-0}" = 1 ]; then
  /lib/systemd/systemd-udevd --daemon >/dev/null 2>&1
  udevadm trigger --action=add >/dev/null 2>&1
  udevadm settle -t 30 >/dev/null 2>&1
else
  export DM_DISABLE_UDEV=1
fi

(while :; do sleep "${COWLAB_HB:-2}"; emit '{"event":"hb"}'; done) &
export COWLAB_HEARTBEAT_PID=$!  # stopping it (kill -STOP) makes the guest look hung

cd "$COWLAB_PAYLOAD" || cd /
if [ "${COWLAB_MODE:-command}" = shell ]; then
  emit '{"event":"start"}'
  stty -F /dev/ttyS0 sane rows "${COWLAB_ROWS:-24}" cols "${COWLAB_COLS:-80}" 2>/dev/null
  echo "cowlab guest: profile ${COWLAB_PROFILE:-?}, kernel $release, disks: ${COWLAB_DISKS:-none}."
  echo "Leave with 'exit' (or Ctrl-A x to kill QEMU)."
  setsid -w -c bash -l <>/dev/ttyS0 >&0 2>&0
  emit "{\"event\":\"exit\",\"status\":$?,\"timed_out\":false}"
  poweroff_now
fi

emit "{\"event\":\"start\",\"uptime\":$(uptime)}"
setsid bash /run/cowlab/cmd.sh </dev/null >"${port[cowlab.out]:-/dev/null}" 2>"${port[cowlab.err]:-/dev/null}" &
cmd=$!
(sleep "${COWLAB_TIMEOUT:-600}"; : > /run/cowlab/timed-out; kill -KILL -- "-$cmd" "$cmd" 2>/dev/null) &
killer=$!
wait "$cmd"
rc=$?
kill "$killer" 2>/dev/null
timed_out=false
[ -e /run/cowlab/timed-out ] && timed_out=true
emit "{\"event\":\"exit\",\"status\":$rc,\"timed_out\":$timed_out,\"uptime\":$(uptime)}"
poweroff_now
