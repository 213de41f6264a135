#!/usr/bin/env bash
# make bench, guest part (called by bench/run.sh BUILD OUT): container create time on a 1 GiB vs
# a 10 MiB image for the drivers only guests have, devicemapper and zfs (issue 4, target <= 1.2).
# Each driver runs the measure-create suite of tests/vm/guest_driver_suites.sh in one guest of
# the default profile: both images imported, then 7 interleaved `cowlab create-layer --rw` on
# each, medians compared; the pool growth of the 14 containers is reported too.
# Results: OUT/create-cost.txt, one "<driver> ratio <r> small <ms> big <ms>" line per driver.
#   COWLAB_BENCH_CREATE_DRIVERS  drivers to measure (default: "devicemapper zfs")
set -euo pipefail
build=${1:-build}; out=${2:-bench-results}
here=$(cd "$(dirname "$0")" && pwd)
cowlab=$build/drivers/cli/cowlab
suites=$here/../../tests/vm/guest_driver_suites.sh
mkdir -p "$out"
: >"$out/create-cost.txt"
for driver in ${COWLAB_BENCH_CREATE_DRIVERS:-devicemapper zfs}; do
  case $driver in
    zfs) disks=(--disk 6G --disk 12G) ;;  # the pool's partition, and ext4 for the image tars
    *) disks=(--disk 12G) ;;
  esac
  log=$out/create-cost-$driver.log
  if ! "$cowlab" vm run --profile debian-6.1 --with-cowlab --memory 1536 --timeout 3000 "${disks[@]}" \
      --payload "$suites:guest_driver_suites.sh" -- \
      env ONLY=measure-create MEASURE_CREATE=1 bash guest_driver_suites.sh "$driver" >"$log" 2>&1; then
    echo "$driver: the guest run failed (log: $log)" | tee -a "$out/create-cost.txt"
    continue
  fi
  small=$(sed -n 's/.*create on small image:.*(median \([0-9]*\) ms).*/\1/p' "$log")
  big=$(sed -n 's/.*create on big image:.*(median \([0-9]*\) ms).*/\1/p' "$log")
  ratio=$(sed -n 's/.*ratio big\/small: \([0-9.]*\);.*/\1/p' "$log")
  grep -E 'create on|ratio big' "$log" | sed "s/^/$driver:/"
  echo "$driver ratio $ratio small ${small}ms big ${big}ms (target <= 1.2)" | tee -a "$out/create-cost.txt"
done
