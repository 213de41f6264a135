#!/usr/bin/env bash
# make bench: every benchmark, ratios measured side by side in one run.
# Usage: bench/run.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
out=${COWLAB_BENCH_OUT:-bench-results}
mkdir -p "$out"

echo "== storage core (issue 2) =="
tar=$("$here/../vm-images/minbase-tar.sh")
python3 "$here/storage_bench.py" --cowlab "$build/drivers/cli/cowlab" --tar "$tar" --out "$out"

echo "== store locking and fuzzing throughput (issue 11) =="
python3 "$here/store_lock_bench.py" --cowlab "$build/drivers/cli/cowlab" --build "$build" --out "$out"

# == guests (harness) ==
if [ -x "$here/vm/run.sh" ]; then
  echo "== guests (issue 3) =="
  "$here/vm/run.sh" "$build" "$out"
fi

# == the guest payload (issue 14): initrd size and boot time with the stripped vs the full cowlab ==
if [ "${COWLAB_BENCH_STRIP:-1}" != 0 ]; then
  echo "== guest payload: stripped vs unstripped cowlab (issue 14) =="
  python3 "$here/vm/strip_bench.py" --cowlab "$build/drivers/cli/cowlab" --out "$out" | tee "$out/strip-bench.txt"
fi

# == drivers only guests have (issue 4): create cost on a 1 GiB vs a 10 MiB image ==
if [ -x "$here/vm/create_cost.sh" ]; then
  echo "== devicemapper and zfs in guests (issue 4) =="
  "$here/vm/create_cost.sh" "$build" "$out"
fi

# == kernels built from source (issue 9): full and incremental build, boot vs Debian's kernel ==
# COWLAB_BENCH_KBUILD=0 skips it (a full kernel build: ~6 min on 2 quiet cores, far more under load).
if [ "${COWLAB_BENCH_KBUILD:-1}" != 0 ]; then
  echo "== kernels built from source (issue 9) =="
  "$here/vm/kernel_build.sh" "$build/drivers/cli/cowlab" "$out" | tee "$out/kernel-build-bench.txt"
fi

# == the scenario matrix (issue 5): default matrix wall time, guest vs host per scenario ==
echo "== scenario matrix (issue 5) =="
python3 "$here/matrix_bench.py" --cowlab "$build/drivers/cli/cowlab" --scenarios "$here/../scenarios" --out "$out"

# == power-cut testing (issue 12): the data barrier's cost, crash states per minute ==
echo "== power-cut testing (issue 12) =="
python3 "$here/crash_bench.py" --cowlab "$build/drivers/cli/cowlab" --tar "$tar" --out "$out"

# == regression hunting (issue 10): --repeat 3 vs one run; the synthetic bisection ==
echo "== regression hunting (issue 10) =="
python3 "$here/regress_bench.py" --cowlab "$build/drivers/cli/cowlab" --scenarios "$here/../scenarios" --out "$out"
