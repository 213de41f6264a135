#!/usr/bin/env bash
# make bench, guest part (called by bench/run.sh BUILD OUT): boot ratios per profile and image
# build times; results also in OUT/vm-bench.txt.
#   COWLAB_BENCH_VM_PROFILES  profiles for the boot benchmark (default: all three)
#   COWLAB_BENCH_BOOT_RUNS    boots of each kind per profile (default 7)
#   COWLAB_BENCH_VM_SCRATCH=0 skips the from-scratch image build (several minutes)
set -euo pipefail
build=${1:-build}; out=${2:-bench-results}
here=$(cd "$(dirname "$0")" && pwd)
cowlab=$build/drivers/cli/cowlab
mkdir -p "$out"
read -r -a profiles <<<"${COWLAB_BENCH_VM_PROFILES:-debian-6.1 debian-6.12 debian-5.10}"
{
  # 7 boots of each kind: on a noisy 2-core host the medians of 3 move by +-0.05 in ratio.
  "$here/boot.sh" "$cowlab" "${COWLAB_BENCH_BOOT_RUNS:-7}" "${profiles[@]}"
  if [ "${COWLAB_BENCH_VM_SCRATCH:-1}" != 0 ]; then "$here/build.sh" "$cowlab" debian-6.1; fi
} | tee "$out/vm-bench.txt"
