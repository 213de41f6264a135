#!/bin/bash
# The libFuzzer targets: build them (clang, ASan + UBSan) and run them.
#   fuzz.sh build BUILD_DIR SOURCE_DIR      configure + build BUILD_DIR (COWLAB_FUZZ=ON)
#   fuzz.sh run BUILD_DIR TARGET SECONDS    run TARGET for SECONDS on a copy of its seed corpus
# A crash leaves its input in BUILD_DIR/artifacts/TARGET/ and fails; the reproducer is
#   BUILD_DIR/tests/fuzz/TARGET ARTIFACT
# and it belongs in a unit test beside the code (see docs/fuzzing.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?build|run}
build=${2:?BUILD_DIR}
case $cmd in
build)
  src=${3:?SOURCE_DIR}
  cxx=$(command -v clang++-14 || command -v clang++ || true)
  cc=$(command -v clang-14 || command -v clang || true)
  [ -n "$cxx" ] && [ -n "$cc" ] || { echo "fuzz.sh: clang++-14 not found: the fuzz targets need clang (make deps installs clang-14 and libclang-rt-14-dev)"; exit 1; }
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOWLAB_FUZZ=ON \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" "${launcher[@]}" >/dev/null
  nice -n 10 cmake --build "$build" --target fuzz_all --parallel "${FUZZ_JOBS:-2}"
  ;;
run)
  target=${3:?TARGET}
  seconds=${4:?SECONDS}
  bin="$build/tests/fuzz/$target"
  [ -x "$bin" ] || { echo "fuzz.sh: $bin not built (fuzz.sh build first)"; exit 1; }
  corpus="$build/corpus/$target"
  artifacts="$build/artifacts/$target/"
  mkdir -p "$corpus" "$artifacts"
  work=$(mktemp -d "${TMPDIR:-/tmp}/cowlab-fuzz-$target-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  log="$build/$target.log"
  # -timeout: one input taking 25 s is a finding (a hang); -rss_limit_mb: so is a memory blowup.
  set +e
  start=$(date +%s)
  TMPDIR="$work" ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$bin" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts" "$corpus" "$here/corpus/$target" >"$log" 2>&1
  rc=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  [ "$elapsed" -gt 0 ] || elapsed=1
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "$target: ${execs:-?} executions in ${elapsed}s of ${seconds}s ($(( ${execs:-0} / elapsed )) exec/s), corpus $(ls "$corpus" | wc -l) inputs, exit $rc"
  if [ $rc -ne 0 ]; then
    grep -E "^(==|SUMMARY|.*runtime error|fuzz_)" "$log" | head -30
    # libFuzzer names the input it saved ("Test unit written to PATH"); a finding without one
    # (the fuzzer itself failed) points at the log.
    found=$(sed -n 's/.*Test unit written to //p' "$log")
    for f in $found; do echo "fuzz.sh: $target finding: $f (reproduce: $bin $f)"; done
    echo "fuzz.sh: $target found a crash; input in $artifacts (full log: $log)"
    exit 1
  fi
  ;;
*) echo "fuzz.sh: unknown command $cmd"; exit 2 ;;
esac
