#!/usr/bin/env bash
# make bench, kernels built from source (issue 9): on this machine, in one run,
#   1. a full build of debian:6.1 with cowlab's minimal config (ccache off, a fresh work tree),
#   2. the incremental rebuild after touching one file in fs/overlayfs (same work tree),
#   3. opt-in (COWLAB_BENCH_KBUILD_DEBIAN_CONFIG=1, hours on 2 cores): the same full build with
#      Debian's own config (the debian-6.1 profile's cloud kernel config), to show what the
#      minimal config saves,
#   4. boot-to-first-command of the source-built kernel vs Debian's cloud kernel of the series
#      (`cowlab vm bench`, medians; ratio).
#   bench/vm/kernel_build.sh COWLAB [OUT]
#   COWLAB_BENCH_KBUILD_SOURCE (default debian:6.1), COWLAB_BENCH_BOOT_RUNS (default 7).
set -euo pipefail
cowlab=${1:?usage: kernel_build.sh COWLAB [OUT]}; out=${2:-bench-results}
source_spec=${COWLAB_BENCH_KBUILD_SOURCE:-debian:6.1}
series=${source_spec#debian:}
runs=${COWLAB_BENCH_BOOT_RUNS:-7}
mkdir -p "$out"
cache=${COWLAB_CACHE:-$HOME/.cache/cowlab}
scratch=$(mktemp -d "$cache/kernel/bench.XXXXXX" 2>/dev/null || { mkdir -p "$cache/kernel"; mktemp -d "$cache/kernel/bench.XXXXXX"; })
trap 'rm -rf "$scratch"' EXIT
# Every timed build passes --force: without it a second `make bench` found the first one's
# product in the kernel cache (same source identity and config) and reported "0 s, 0 objects".
secs() { python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
if r.get("cached"): sys.exit("kernel bench: %s came from the kernel cache, not a build" % sys.argv[1])
print("%.0f" % r["build_seconds"])' "$1"; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# A private copy of the tree (hard links; the touched file gets its own inode first, so the
# cached source keeps its mtime) so that "touch one file" is literal.
tree=$("$cowlab" kernel source "$source_spec" | sed -n 's/^tree: //p')
[ -d "$tree" ] || { echo "kernel bench: no tree for $source_spec" >&2; exit 1; }
cp -al "$tree" "$scratch/tree"

echo "kernel build from $source_spec, minimal config (tinyconfig + harness + storage fragments), $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
CCACHE_DISABLE=1 "$cowlab" kernel build --force --source "$scratch/tree" --zfs no --no-images --work-dir "$scratch/work" \
  --profile bench-src --result-json "$scratch/full.json" >"$scratch/full.log" 2>&1 ||
  { tail -n 30 "$scratch/full.log"; exit 1; }
full=$(secs "$scratch/full.json")
echo "  full build (ccache off):            ${full} s  ($(field "$scratch/full.json" objects_compiled) objects)"

f=$scratch/tree/fs/overlayfs/readdir.c
cp --remove-destination "$tree/fs/overlayfs/readdir.c" "$f"
touch "$f"
CCACHE_DISABLE=1 "$cowlab" kernel build --force --source "$scratch/tree" --zfs no --no-images --work-dir "$scratch/work" \
  --profile bench-src --result-json "$scratch/incr.json" >"$scratch/incr.log" 2>&1 ||
  { tail -n 30 "$scratch/incr.log"; exit 1; }
incr=$(secs "$scratch/incr.json")
echo "  rebuild after touching fs/overlayfs/readdir.c: ${incr} s  ($(field "$scratch/incr.json" objects_compiled) objects, build dir reused: $(field "$scratch/incr.json" build_dir_reused))"
python3 -c "import sys; print('  full / incremental: %.1fx' % (float(sys.argv[1]) / max(1.0, float(sys.argv[2]))))" "$full" "$incr"

if [ "${COWLAB_BENCH_KBUILD_DEBIAN_CONFIG:-0}" = 1 ]; then
  # The cloud kernel's config, kept beside the profile's kernel image in the cache.
  dcfg=$(python3 - "$cache/profiles/debian-$series.json" "$cache/images" <<'PY' 2>/dev/null || true
import json, os, sys
m = json.load(open(sys.argv[1]))
print(os.path.join(sys.argv[2], m["artifacts"]["kernel"], "config"))
PY
)
  if [ -n "$dcfg" ] && [ -f "$dcfg" ]; then
    # Debian's config sets DEBUG_INFO_BTF, whose final link needs pahole (dwarves), which the
    # harness does not install: without this fragment the build failed at vmlinux after 42 min
    # ("BTF: .tmp_vmlinux.btf: pahole (pahole) is not available").  BTF is debug metadata, not
    # code: leaving it out does not change what is compiled.
    printf '# CONFIG_DEBUG_INFO_BTF is not set\n' > "$scratch/no-btf.config"
    CCACHE_DISABLE=1 "$cowlab" kernel build --force --source "$scratch/tree" --config "$dcfg" \
      --config-fragment "$scratch/no-btf.config" --zfs no --no-images \
      --work-dir "$scratch/work-debian" --result-json "$scratch/debian.json" >"$scratch/debian.log" 2>&1 ||
      { tail -n 30 "$scratch/debian.log"; exit 1; }
    d=$(secs "$scratch/debian.json")
    # Nothing boots this kernel: drop its product (1.2 GB of modules) from the kernel cache.
    product=$(field "$scratch/debian.json" product)
    case $product in "$cache"/kernel/out/?*) rm -rf -- "$product" ;; esac
    python3 -c "import sys; print('  Debian config full build: %s s (%.1fx the minimal config)' % (sys.argv[1], float(sys.argv[1]) / float(sys.argv[2])))" "$d" "$full"
  else
    echo "  Debian config build: skipped (profile debian-$series has no kernel config; build it: cowlab vm build --profile debian-$series)"
  fi
else
  echo "  Debian config build: skipped (opt-in: COWLAB_BENCH_KBUILD_DEBIAN_CONFIG=1; hours on 2 cores)"
fi

# Boot-to-first-command: the source-built kernel (with its images) vs the Debian cloud kernel.
"$cowlab" kernel build --source "$scratch/tree" --zfs no --work-dir "$scratch/work" --profile bench-src >/dev/null 2>&1
"$cowlab" vm build --profile "debian-$series" --quick-verify >/dev/null 2>&1 || "$cowlab" vm build --profile "debian-$series"
"$cowlab" vm bench --profile bench-src --runs "$runs" --json > "$scratch/boot-src.json"
"$cowlab" vm bench --profile "debian-$series" --runs "$runs" --json > "$scratch/boot-deb.json"
python3 - "$scratch/boot-src.json" "$scratch/boot-deb.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))[0]; d = json.load(open(sys.argv[2]))[0]
print(f"  boot to first command: source-built {s['first_command_median']:.2f} s ({s['kernel_release']}), "
      f"Debian cloud {d['first_command_median']:.2f} s ({d['kernel_release']}); "
      f"ratio source/Debian {s['first_command_median'] / d['first_command_median']:.2f}")
PY
