#!/bin/sh
# Runs in a guest (tests/vm/test_killed_runs.py): for every driver given as an argument, a
# `cowlab scenario run` whose worker is killed with the store open — once at the scenario's
# timeout, once by SIGTERM to cowlab's process group (a background job of a shell ignores
# SIGINT, so not Ctrl-C's signal; cowlab handles the two alike) — then what the kernel still
# holds: device-mapper devices, loop devices, zfs pools, mounts and files under the work dir.
# Then a short scenario on the same driver, which must still pass, three times: the later two
# from the image checkpoint of the first (`--repeat`), leaving nothing behind either.  One JSON line per driver
# and case in $COWLAB_RESULTS; the host decides.
set -u
mkfs.ext4 -q -F /dev/cowlab/scratch0 || exit 2
W=/run/cowlab/work
mkdir -p $W && mount /dev/cowlab/scratch0 $W || exit 2
S=$COWLAB_PAYLOAD/scenarios
modprobe zfs 2>/dev/null

# The kernel's objects, one per line: what a run may leave behind.
held() {
  dmsetup ls 2>/dev/null | grep -v '^No devices found' | sed 's/^/dm /'
  losetup -a 2>/dev/null | sed 's/^/loop /'
  zpool list -H -o name 2>/dev/null | sed 's/^/zpool /'
  awk -v w="$W/" 'index($5, w) == 1 { print "mount " $5 }' /proc/self/mountinfo
  ls -A $W | grep -v '^lost+found$' | sed 's/^/file /'
}
b64() { base64 -w0; }

for d in "$@"; do
  for how in timeout signal; do
    before=""
    if [ $how = timeout ]; then
      # Two runs, both killed at the timeout: the second from the image checkpoint the first saved.
      cowlab scenario run --driver "$d" --repeat 2 --work-dir $W --out /run/cowlab/run.jsonl "$S/long.yaml" \
        > /dev/null 2> /run/cowlab/run.err
      rc=$?
    else
      setsid cowlab scenario run --driver "$d" --work-dir $W --out /run/cowlab/run.jsonl "$S/long.yaml" \
        > /dev/null 2> /run/cowlab/run.err &
      pid=$!
      # The run's first kernel object (its pool, loop device or mount), then a few seconds on:
      # its store open, its layers and containers made (the steps go on past the timeout).
      i=0
      while [ $i -lt 200 ] && [ -z "$(held | grep -v '^file ')" ]; do sleep 0.1; i=$((i + 1)); done
      sleep 6
      before=$(held | b64)
      kill -TERM -$pid
      wait $pid
      rc=$?
    fi
    after=$(held | b64)
    results=$(cat /run/cowlab/run.jsonl 2>/dev/null | b64)
    rm -f /run/cowlab/run.jsonl
    err=$(b64 < /run/cowlab/run.err)
    # Three runs: the first imports the image and saves a checkpoint, the others restore it.
    cowlab scenario run --driver "$d" --repeat 3 --work-dir $W --out /run/cowlab/next.jsonl "$S/short.yaml" \
      > /dev/null 2> /run/cowlab/next.err
    next_rc=$?
    next=$(cat /run/cowlab/next.jsonl 2>/dev/null | b64)
    rm -f /run/cowlab/next.jsonl
    next_after=$(held | b64)
    next_err=$(b64 < /run/cowlab/next.err)
    printf '{"driver": "%s", "how": "%s", "rc": %d, "results_b64": "%s", "stderr_b64": "%s", "before_b64": "%s", "after_b64": "%s", "next_rc": %d, "next_b64": "%s", "next_stderr_b64": "%s", "next_after_b64": "%s"}\n' \
      "$d" $how $rc "$results" "$err" "$before" "$after" $next_rc "$next" "$next_err" "$next_after" >> "$COWLAB_RESULTS"
  done
done
