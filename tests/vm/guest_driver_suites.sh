#!/bin/bash
# guest_driver_suites.sh DRIVER — runs inside a guest (`cowlab vm run`, see driver_suites.py):
# the storage core's suites for one driver whose kernel facility only guests have.
#
#   zfs   disk 1: a GPT partition holding the pool "cowlabtest" (a partition, not the whole
#         disk: whole-disk `zpool create` waits for udev, which the guest does not run);
#         disk 2: ext4 at /work for the scenario runner's own file-vdev pools.
#   aufs  disk 1: ext4 at /scratch (aufs refuses btrfs, aufs and ecryptfs backing stores).
#   devicemapper  disk 1: ext4 at /scratch, holding each store's loop-lvm data and metadata
#         files (the guest's root is too small for them).
#
# Suites, each reported as "SUITE <name> PASS|FAIL|SKIP <reason>":
#   unit          the driver's unit tests against the real kernel facility (cowlab_unit_tests)
#   conformance   Docker's graphtest port (cowlab_conformance --driver=DRIVER; zfs on a fresh
#                 file-vdev pool per test, which also covers zfs.fsname=<pool root>)
#   whiteout      scenarios/whiteout (OCI whiteout and opaque-dir sequences)
#   regression    the driver's regression scenarios (moby#16112 leaked mounts; moby#9151 for aufs)
#   security      the breakout and malformed-tar corpus through import-layer and applydiff
#   readers       aufs only: concurrent readers and a read-only store (readers_suite)
# After every suite the script asserts that the suite left nothing behind — no dataset or
# snapshot beyond the baseline, no extra pool, no dm device, no new mount, no loop device — and prints
# "LEFTOVER <suite>: ..." (a failure) otherwise.
# With MEASURE_CREATE=1 (zfs, devicemapper) it also times container creation on a 1 GiB and a 10 MiB image;
# with MEASURE_IMPORT=1 it times import-layer of $COWLAB_PAYLOAD/minbase.tar against tar -x.
# ONLY="suite ..." runs just those suites (the others print SKIP with that reason); make bench
# uses ONLY="measure-create measure-import" (bench/vm/create_cost.sh).
set -uo pipefail
driver=${1:?usage: guest_driver_suites.sh zfs|aufs|devicemapper}
bin=$COWLAB_PAYLOAD/bin
export PATH=$bin:$PATH
read -r -a disks <<<"${COWLAB_DISKS:-}"
failures=0

record() { [ -n "${COWLAB_RESULTS:-}" ] && printf '%s\n' "$1" >>"$COWLAB_RESULTS"; return 0; }
die() { echo "guest_driver_suites: $*" >&2; exit 2; }

# ---- setup -------------------------------------------------------------------------------------
case $driver in
  zfs)
    [ ${#disks[@]} -ge 2 ] || die "zfs needs two scratch disks, got '${COWLAB_DISKS:-}'"
    modprobe zfs || die "modprobe zfs failed"
    echo ',,' | sfdisk -q --label gpt "${disks[0]}" || die "sfdisk ${disks[0]}"
    part=$(lsblk -lnpo NAME "${disks[0]}" | sed -n 2p)
    [ -b "$part" ] || die "no partition on ${disks[0]}"
    zpool create -f -o cachefile=none -O mountpoint=/cowlabtest -O compression=off cowlabtest "$part" ||
      die "zpool create"
    for ds in unit sec cli; do zfs create "cowlabtest/$ds" || die "zfs create cowlabtest/$ds"; done
    mkfs.ext4 -q "${disks[1]}" && mkdir -p /work && mount "${disks[1]}" /work || die "ext4 on ${disks[1]}"
    base=/cowlabtest
    echo "zfs module $(cat /sys/module/zfs/version), userland $(zfs version 2>/dev/null | head -n1)"
    ;;
  aufs)
    if ! grep -qw aufs /proc/filesystems && ! { modprobe aufs 2>/dev/null && grep -qw aufs /proc/filesystems; }; then
      echo "SUITE all SKIP this kernel ($(uname -r)) has no aufs"
      exit 77
    fi
    [ ${#disks[@]} -ge 1 ] || die "aufs needs a scratch disk"
    mkfs.ext4 -q "${disks[0]}" && mkdir -p /scratch && mount "${disks[0]}" /scratch || die "ext4 on ${disks[0]}"
    mkdir -p /scratch/unit /scratch/conf /scratch/sec /scratch/work
    base=/scratch
    echo "aufs $(cat /sys/module/aufs/version 2>/dev/null || echo built-in) on $(uname -r)"
    ;;
  devicemapper)
    [ ${#disks[@]} -ge 1 ] || die "devicemapper needs a scratch disk"
    modprobe dm_thin_pool || die "modprobe dm_thin_pool failed"
    mkfs.ext4 -q "${disks[0]}" && mkdir -p /scratch && mount "${disks[0]}" /scratch || die "ext4 on ${disks[0]}"
    mkdir -p /scratch/unit /scratch/conf /scratch/sec /scratch/work /scratch/cli
    base=/scratch
    echo "device-mapper $(dmsetup version 2>/dev/null | paste -sd' ') on $(uname -r)"
    ;;
  *) die "unknown driver $driver" ;;
esac

# One line per dataset/snapshot, pool, mount point and loop device, sorted as a whole (comm
# needs one collation order).
export LC_ALL=C
snapshot_state() {
  {
    if [ "$driver" = zfs ]; then
      zfs list -H -o name -r -t all cowlabtest | sed 's/^/dataset: /'
      zpool list -H -o name | sed 's/^/pool: /'
    fi
    awk '{print "mount: " $5}' /proc/self/mountinfo
    for f in /sys/block/dm-*/dm/name; do [ -e "$f" ] && echo "dm: $(cat "$f")"; done
    losetup -a -n -O NAME,BACK-FILE 2>/dev/null | sed 's/^/loop: /'
  } | sort
}
baseline=$(snapshot_state)

check_clean() {
  local suite=$1 now extra missing
  now=$(snapshot_state)
  if [ "$now" != "$baseline" ]; then
    # Temp files, not <(...): the guest's /dev has no /dev/fd.
    echo "$baseline" >/tmp/state.before
    echo "$now" >/tmp/state.after
    extra=$(comm -13 /tmp/state.before /tmp/state.after | paste -sd' ')
    missing=$(comm -23 /tmp/state.before /tmp/state.after | paste -sd' ')
    echo "LEFTOVER $suite: left behind [$extra] removed [$missing]"
    record "{\"suite\":\"$suite\",\"driver\":\"$driver\",\"leftover\":\"$extra\"}"
    failures=$((failures + 1))
  fi
}

run_suite() {
  local name=$1
  shift
  if [ -n "${ONLY:-}" ] && ! grep -qw -- "$name" <<<"$ONLY"; then
    echo "SUITE $name SKIP (not selected: ONLY=$ONLY)"
    return 0
  fi
  echo "== suite $name: $*"
  local t0=$SECONDS
  "$@"
  local rc=$?
  local secs=$((SECONDS - t0))
  if [ $rc -eq 0 ]; then
    echo "SUITE $name PASS (${secs}s)"
    record "{\"suite\":\"$name\",\"driver\":\"$driver\",\"status\":\"pass\",\"seconds\":$secs}"
  else
    echo "SUITE $name FAIL (exit $rc, ${secs}s)"
    record "{\"suite\":\"$name\",\"driver\":\"$driver\",\"status\":\"fail\",\"exit\":$rc,\"seconds\":$secs}"
    failures=$((failures + 1))
  fi
  check_clean "$name"
}

# ---- suites ------------------------------------------------------------------------------------
unit_suite() {
  if [ "$driver" = zfs ]; then
    COWLAB_ZFS_TEST_FSNAME=cowlabtest/unit COWLAB_TEST_TMPDIR=/work cowlab_unit_tests --gtest_brief=1 --gtest_filter='*Zfs*'
  elif [ "$driver" = devicemapper ]; then
    # The kernel tests (DevicemapperKernel) and the fake-pool ones beside them.
    COWLAB_TEST_TMPDIR=/scratch/unit cowlab_unit_tests --gtest_brief=1 \
      --gtest_filter='Devicemapper*:DeviceSet*:Dm*'
  else
    TMPDIR=/scratch/unit cowlab_unit_tests --gtest_brief=1 --gtest_filter='*Aufs*'
  fi
}

# zfs: a fresh file-vdev pool per test (zfs-pool fixture, vdevs on the ext4 disk): graphtest
# leaves some layers to the store's teardown, and datasets live outside the store root.
conformance_suite() {
  if [ "$driver" = zfs ]; then
    COWLAB_TEST_TMPDIR=/work cowlab_conformance --driver=zfs --fixture=zfs-pool --require-usable --gtest_brief=1
  else
    COWLAB_TEST_TMPDIR=$base/conf cowlab_conformance --driver="$driver" --fixture=tmpdir --require-usable --gtest_brief=1
  fi
}

# One `cowlab scenario run` per file, so a scenario file that does not validate is reported by
# name (and fails the suite) without hiding the results of the others.
scenario_suite() {
  local out=/tmp/scenarios-$1.jsonl rc=0 f files=()
  shift
  for f in "$@"; do
    if [ -d "$f" ]; then files+=("$f"/*.yaml); else files+=("$f"); fi
  done
  : >"$out"
  for f in "${files[@]}"; do
    if ! msg=$(cowlab scenario check "$f" 2>&1); then
      echo "  INVALID scenario $(basename "$f"): $msg"
      rc=1
      continue
    fi
    cowlab scenario run --driver "$driver" --work-dir "${work_dir}" --out "$out" "$f" || rc=1
  done
  # Every result line comes back to the host as a record.
  while IFS= read -r line; do record "$line"; done <"$out"
  return $rc
}

# The breakout corpus (tests/host/test_security.py) on this driver: every tar is refused,
# naming the operation, nothing of the layer remains, and a victim beside the store root is
# byte-for-byte unchanged.
security_suite() {
  local dir=$base/sec root=$base/sec/root rc=0 out t name
  mkdir -p "$dir/victim"
  printf 'victim content 2026-11-29T00:00:00Z' >"$dir/victim/hello"
  local victim_before
  victim_before=$(cd "$dir" && find victim -printf '%p %m %s\n' | sort; sha256sum "$dir/victim/hello")
  local cow=(cowlab --root "$root" --driver "$driver")
  "${cow[@]}" create-layer --rw c >/dev/null || { echo "create-layer c failed"; return 1; }
  local changes_before
  changes_before=$("${cow[@]}" changes --parent "" c)
  for t in "$COWLAB_PAYLOAD"/security/*.tar; do
    name=$(basename "$t" .tar)
    out=$("${cow[@]}" import-layer evil "$t" 2>&1)
    if [ $? -ne 1 ] || ! grep -q "import-layer evil" <<<"$out"; then
      echo "  $name: import-layer not refused: $out"; rc=1
    fi
    if "${cow[@]}" exists evil >/dev/null 2>&1; then echo "  $name: layer evil exists after refusal"; rc=1; fi
    if [ "$driver" = zfs ] && zfs list -H -o name -r cowlabtest/sec | grep -q '/evil$'; then
      echo "  $name: dataset of the refused layer remains"; rc=1
    fi
    out=$("${cow[@]}" applydiff c "$t" 2>&1)
    if [ $? -ne 1 ] || ! grep -q "apply-diff layer c" <<<"$out"; then
      echo "  $name: applydiff not refused: $out"; rc=1
    fi
    if [ "$("${cow[@]}" changes --parent "" c)" != "$changes_before" ]; then
      echo "  $name: applydiff changed layer c"; rc=1
    fi
  done
  [ "$(cd "$dir" && find victim -printf '%p %m %s\n' | sort; sha256sum "$dir/victim/hello")" = "$victim_before" ] ||
    { echo "  the victim outside the store root changed"; rc=1; }
  echo "  $(ls "$COWLAB_PAYLOAD"/security/*.tar | wc -l) tars refused through import-layer and applydiff"
  "${cow[@]}" wipe || rc=1
  rm -rf "$dir/victim" "$root"
  return $rc
}

# aufs (issue 11): readers run at once under the store's shared lock and must not break each
# other's init, and read-only commands work on a read-only store.  READER_ROUNDS (10) rounds of 4
# concurrent `layers`, the dirperm1 record (<home>/probes) made stale before each, so that every
# reader probes in a dir of its own; each must succeed and list the same layers, and no probe
# dir may be left.  Then the store bind-mounted read-only: layers, changes, exists and info.
readers_suite() {
  local root=$base/readers round i pids fails=0 total=0 want rc=0
  local cow=(cowlab --root "$root" --driver "$driver")
  "${cow[@]}" create-layer base >/dev/null && "${cow[@]}" create-layer --parent base mid >/dev/null ||
    return 1
  want=$("${cow[@]}" layers) || return 1
  for round in $(seq "${READER_ROUNDS:-10}"); do
    printf 'boot stale\ndirperm1 1\n' >"$root/aufs/probes"
    pids=()
    for i in 1 2 3 4; do
      "${cow[@]}" layers >"$work_dir/reader$i.out" 2>"$work_dir/reader$i.err" &
      pids+=($!)
    done
    for i in 1 2 3 4; do
      total=$((total + 1))
      if ! wait "${pids[$((i - 1))]}"; then
        fails=$((fails + 1))
        echo "  round $round reader $i failed: $(head -n1 "$work_dir/reader$i.err")"
      elif [ "$(cat "$work_dir/reader$i.out")" != "$want" ]; then
        fails=$((fails + 1))
        echo "  round $round reader $i listed: $(paste -sd' ' "$work_dir/reader$i.out")"
      fi
    done
  done
  echo "  $fails of $total concurrent readers failed"
  [ "$fails" -eq 0 ] || rc=1
  local left
  left=$(find "$root/aufs" -mindepth 1 -maxdepth 1 -name '.probe-*' | wc -l)
  [ "$left" -eq 0 ] || { echo "  $left probe dir(s) left in $root/aufs"; rc=1; }
  mount --bind "$root" "$root" && mount -o remount,bind,ro "$root" || return 1
  for c in layers "changes mid" "exists mid" info; do
    # shellcheck disable=SC2086  # $c is a command and its arguments
    if "${cow[@]}" $c >/dev/null 2>"$work_dir/ro.err"; then
      echo "  read-only store: $c: ok"
    else
      echo "  read-only store: $c failed: $(head -n1 "$work_dir/ro.err")"
      rc=1
    fi
  done
  umount "$root" || rc=1
  "${cow[@]}" wipe >/dev/null || rc=1
  rm -rf "$root"
  return $rc
}

# Bytes the store's pool has allocated: the zfs dataset's "used", or the dm-thin pool's used data
# blocks times its block size (the test reads the pool's status line; the driver itself never
# parses dmsetup output).
space_used() {
  if [ "$driver" = zfs ]; then
    zpool sync cowlabtest
    zfs get -Hp -o value used cowlabtest/cli
  else
    sync
    local pool
    pool=$(cat /sys/block/dm-*/dm/name | grep -- '-pool$' | head -n1)
    DM_DISABLE_UDEV=1 dmsetup table "$pool" | awk '{bs=$6} END {printf "%s ", bs}'
    DM_DISABLE_UDEV=1 dmsetup status "$pool" | awk '{split($6, d, "/"); print d[1]}'
  fi | awk 'NF == 2 {print $1 * 512 * $2; next} {print $1}'
}

# Container creation cost vs image size (the seed's "starting a container does not copy the
# full image"): five creates on each image, median wall time of `cowlab create-layer --rw`.
measure_create() {
  local root=$base/cli/root cow img t0 t1 i size
  cow=(cowlab --root "$root" --driver "$driver")
  for img in small:10 big:1024; do
    size=${img#*:}
    mkdir -p "$work_dir/img-${img%%:*}"
    dd if=/dev/urandom of="$work_dir/img-${img%%:*}/blob" bs=1M count="$size" status=none
    tar -C "$work_dir/img-${img%%:*}" -cf "$work_dir/${img%%:*}.tar" . && rm -rf "$work_dir/img-${img%%:*}"
    "${cow[@]}" import-layer "${img%%:*}" "$work_dir/${img%%:*}.tar" >/dev/null || return 1
    rm -f "$work_dir/${img%%:*}.tar"
  done
  local used0 used1
  used0=$(space_used)
  # Interleaved (small, big, small, big, ...) so a noisy host slows both sides alike; medians
  # of 7 creates each.
  declare -A med times
  for i in 1 2 3 4 5 6 7; do
    for img in small big; do
      t0=$(date +%s%N)
      "${cow[@]}" create-layer --rw --parent "$img" "c-$img-$i" >/dev/null || return 1
      t1=$(date +%s%N)
      times[$img]="${times[$img]:-} $(((t1 - t0) / 1000000))"
    done
  done
  for img in small big; do
    med[$img]=$(printf '%s\n' ${times[$img]} | sort -n | sed -n 4p)
    echo "  create on $img image:${times[$img]} ms (median ${med[$img]} ms)"
  done
  used1=$(space_used)
  local ratio
  ratio=$(awk -v b="${med[big]}" -v s="${med[small]}" 'BEGIN { printf "%.2f", b / s }')
  echo "  ratio big/small: $ratio; 14 containers added $(((used1 - used0) / 1024)) KiB to the pool"
  record "{\"measure\":\"$driver.create_ms\",\"big_1GiB\":${med[big]},\"small_10MiB\":${med[small]},\"ratio\":$ratio,\"space_14_containers_bytes\":$((used1 - used0))}"
  "${cow[@]}" wipe
}


# Layer import cost vs GNU tar (issue 4's benchmark): `cowlab import-layer` of the Debian minbase
# tar ($COWLAB_PAYLOAD/minbase.tar) vs `tar -x` of the same tar into a plain directory on the same
# device — for zfs a plain dataset of the same pool, for devicemapper a directory on the ext4
# disk that holds the thin pool's loop-lvm files. The tar is read once beforehand so both sides
# read it from the page cache; each timed run ends with sync so write-back counts for both.
# Interleaved rounds, medians.
measure_import() {
  local tarf=$COWLAB_PAYLOAD/minbase.tar root=$base/cli/root plain i t0 t1 rounds=${IMPORT_ROUNDS:-3}
  [ -f "$tarf" ] || { echo "  no $tarf in the payload"; return 1; }
  local cow=(cowlab --root "$root" --driver "$driver")
  if [ "$driver" = zfs ]; then
    zfs create cowlabtest/plain || return 1
    plain=/cowlabtest/plain
  else
    plain=$base/plain
  fi
  cat "$tarf" >/dev/null
  local t_tar="" t_cow=""
  for i in $(seq "$rounds"); do
    mkdir -p "$plain/x" && sync
    t0=$(date +%s%N)
    tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$tarf" -C "$plain/x" || return 1
    sync
    t1=$(date +%s%N)
    t_tar="$t_tar $(((t1 - t0) / 1000000))"
    rm -rf "$plain/x" && sync
    t0=$(date +%s%N)
    "${cow[@]}" import-layer "img-$i" "$tarf" >/dev/null || return 1
    sync
    t1=$(date +%s%N)
    t_cow="$t_cow $(((t1 - t0) / 1000000))"
    "${cow[@]}" delete-layer "img-$i" || return 1
  done
  local mid=$(((rounds + 1) / 2)) m_tar m_cow ratio
  m_tar=$(printf '%s\n' $t_tar | sort -n | sed -n "${mid}p")
  m_cow=$(printf '%s\n' $t_cow | sort -n | sed -n "${mid}p")
  ratio=$(awk -v c="$m_cow" -v t="$m_tar" 'BEGIN { printf "%.2f", c / t }')
  echo "  tar -x into $plain:$t_tar ms (median $m_tar ms)"
  echo "  cowlab import-layer ($driver):$t_cow ms (median $m_cow ms)"
  echo "  import ratio cowlab/tar: $ratio ($(stat -c %s "$tarf") bytes, $(tar -tf "$tarf" | wc -l) entries)"
  record "{\"measure\":\"$driver.import_ms\",\"cowlab\":$m_cow,\"tar_x\":$m_tar,\"ratio\":$ratio}"
  "${cow[@]}" wipe
  if [ "$driver" = zfs ]; then zfs destroy cowlabtest/plain; else rm -rf "$plain"; fi
}

work_dir=${base}/work
[ "$driver" = zfs ] && work_dir=/work
run_suite unit unit_suite
run_suite conformance conformance_suite
run_suite whiteout scenario_suite whiteout "$COWLAB_PAYLOAD/scenarios/whiteout"
if [ "$driver" = zfs ]; then
  run_suite regression scenario_suite regression "$COWLAB_PAYLOAD/scenarios/regression/removal-with-leaked-mount.yaml" \
    "$COWLAB_PAYLOAD/scenarios/basic/container-quota.yaml"
elif [ "$driver" = devicemapper ]; then
  run_suite regression scenario_suite regression "$COWLAB_PAYLOAD/scenarios/regression/removal-with-leaked-mount.yaml" \
    "$COWLAB_PAYLOAD/scenarios/claims/copy-up-block-level.yaml"
else
  run_suite regression scenario_suite regression "$COWLAB_PAYLOAD/scenarios/regression/aufs-branches-beyond-page.yaml" \
    "$COWLAB_PAYLOAD/scenarios/regression/removal-with-leaked-mount.yaml"
fi
run_suite security security_suite
[ "$driver" = aufs ] && run_suite readers readers_suite
[ "$driver" != aufs ] && [ "${MEASURE_CREATE:-0}" = 1 ] && run_suite measure-create measure_create
[ "${MEASURE_IMPORT:-0}" = 1 ] && run_suite measure-import measure_import

echo "suites done: $failures failure(s)"
[ "$failures" -eq 0 ]
