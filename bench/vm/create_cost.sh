#!/usr/bin/env bash
# make bench, guest part (called by bench/run.sh BUILD OUT) for the drivers only guests have,
# devicemapper and zfs (issue 4). Each driver runs two suites of tests/vm/guest_driver_suites.sh
# in one guest of the default profile:
#   measure-create  container create time on a 1 GiB vs a 10 MiB image (target <= 1.2): both
#                   images imported, 7 interleaved `cowlab create-layer --rw` on each, medians;
#                   the pool growth of the 14 containers is reported too;
#   measure-import  `cowlab import-layer` of the Debian minbase tar vs `tar -x` of it into a
#                   plain directory on the same device (3 interleaved rounds, medians).
# Results: OUT/create-cost.txt ("<driver> ratio <r> small <ms> big <ms>") and
# OUT/import-guest.txt ("<driver> import ratio <r> cowlab <ms> tar <ms>"), a line per driver.
#   COWLAB_BENCH_CREATE_DRIVERS  drivers to measure (default: "devicemapper zfs")
set -euo pipefail
build=${1:-build}; out=${2:-bench-results}
here=$(cd "$(dirname "$0")" && pwd)
cowlab=$build/drivers/cli/cowlab
suites=$here/../../tests/vm/guest_driver_suites.sh
tar=$("$here/../../vm-images/minbase-tar.sh")
mkdir -p "$out"
: >"$out/create-cost.txt"
: >"$out/import-guest.txt"
for driver in ${COWLAB_BENCH_CREATE_DRIVERS:-devicemapper zfs}; do
  case $driver in
    zfs) disks=(--disk 6G --disk 12G) ;;  # the pool's partition, and ext4 for the image tars
    *) disks=(--disk 12G) ;;
  esac
  log=$out/create-cost-$driver.log
  if ! "$cowlab" vm run --profile debian-6.1 --with-cowlab --memory 1536 --timeout 3000 "${disks[@]}" \
      --payload "$suites:guest_driver_suites.sh" --payload "$tar:minbase.tar" -- \
      env ONLY="measure-create measure-import" MEASURE_CREATE=1 MEASURE_IMPORT=1 bash guest_driver_suites.sh "$driver" >"$log" 2>&1; then
    echo "$driver: the guest run failed (log: $log)" | tee -a "$out/create-cost.txt"
    continue
  fi
  small=$(sed -n 's/.*create on small image:.*(median \([0-9]*\) ms).*/\1/p' "$log")
  big=$(sed -n 's/.*create on big image:.*(median \([0-9]*\) ms).*/\1/p' "$log")
  ratio=$(sed -n 's/.*ratio big\/small: \([0-9.]*\);.*/\1/p' "$log")
  grep -E 'create on|ratio big' "$log" | sed "s/^/$driver:/"
  echo "$driver ratio $ratio small ${small}ms big ${big}ms (target <= 1.2)" | tee -a "$out/create-cost.txt"
  icow=$(sed -n 's/.*cowlab import-layer.*(median \([0-9]*\) ms).*/\1/p' "$log")
  itar=$(sed -n 's/.*tar -x into.*(median \([0-9]*\) ms).*/\1/p' "$log")
  iratio=$(sed -n 's/.*import ratio cowlab\/tar: \([0-9.]*\).*/\1/p' "$log")
  grep -E 'tar -x into|cowlab import-layer|import ratio' "$log" | sed "s/^/$driver:/"
  echo "$driver import ratio $iratio cowlab ${icow}ms tar ${itar}ms" | tee -a "$out/import-guest.txt"
done
