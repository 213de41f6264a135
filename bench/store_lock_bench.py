#!/usr/bin/env python3
"""Issue 11 benchmarks, side by side in one run:
  1. parallel readers (layers, changes, diff) against one writer: reader and writer throughput
     with shared reader locks vs exclusive ones (COWLAB_BENCH_READER_LOCK=exclusive, the
     locking before issue 11), runs interleaved;
  2. fuzzing throughput: executions per second of each libFuzzer target."""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "host"))
from tarbuild import entry, make_tar  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import arg_parser, write_result  # noqa: E402

READER = r'''
import subprocess, sys, time
base, ops, until = eval(sys.argv[1]), eval(sys.argv[2]), float(sys.argv[3])
n = i = 0
while time.time() < until:
    subprocess.run(base + ops[i % len(ops)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n += 1; i += 1
print(n)
'''


def phase(cowlab, root, driver, readers, seconds, reader_lock):
    base = [cowlab, "--root", root, "--driver", driver]
    env = dict(os.environ)
    if reader_lock == "exclusive":
        env["COWLAB_BENCH_READER_LOCK"] = "exclusive"
    until = time.time() + seconds
    rops = [["layers"], ["changes", "top"], ["diff", "top", "-o", "/dev/null"]]
    wops = [["create-layer", "w", "--parent", "top", "--rw"], ["delete-layer", "w"]]
    procs = [subprocess.Popen([sys.executable, "-c", READER, repr(base), repr(rops), str(until)],
                              stdout=subprocess.PIPE, env=env) for _ in range(readers)]
    w = subprocess.Popen([sys.executable, "-c", READER, repr(base), repr(wops), str(until)], stdout=subprocess.PIPE,
                         env=env)
    reads = sum(int(p.communicate()[0]) for p in procs)
    writes = int(w.communicate()[0])
    subprocess.run(base + ["delete-layer", "w"], capture_output=True)
    return reads / seconds, writes / seconds


def lock_bench(cowlab, driver, readers, seconds, rounds):
    work = tempfile.mkdtemp(prefix="cowlab-lockbench-", dir="/var/tmp")
    root = os.path.join(work, "root")
    base = [cowlab, "--root", root, "--driver", driver]
    try:
        files = [entry("d", "dir")] + [entry(f"d/f{i}", data=bytes([i % 256]) * 4096) for i in range(300)]
        subprocess.run(base + ["import-layer", "img", "-"], input=make_tar(files), check=True, capture_output=True)
        subprocess.run(base + ["import-layer", "top", "-", "--parent", "img"],
                       input=make_tar([entry("d/new", data=b"x" * 10000)]), check=True, capture_output=True)
        res = {"shared": [], "exclusive": []}
        for _ in range(rounds):
            for mode in ("shared", "exclusive"):
                res[mode].append(phase(cowlab, root, driver, readers, seconds, mode))
        out = {}
        for mode, vals in res.items():
            out[mode] = {"reads_per_s": statistics.median(v[0] for v in vals),
                         "writes_per_s": statistics.median(v[1] for v in vals)}
        out["read_ratio_shared_vs_exclusive"] = out["shared"]["reads_per_s"] / max(out["exclusive"]["reads_per_s"], 1e-9)
        out["write_ratio_shared_vs_exclusive"] = out["shared"]["writes_per_s"] / max(out["exclusive"]["writes_per_s"], 1e-9)
        return out
    finally:
        subprocess.run(base + ["wipe"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def fuzz_bench(build, seconds):
    script = os.path.join(os.path.dirname(__file__), "..", "tests", "fuzz", "fuzz.sh")
    fuzz_build = os.path.join(build, "fuzz")
    subprocess.run([script, "build", fuzz_build, os.path.join(os.path.dirname(__file__), "..")], check=True)
    out = {}
    for t in ("fuzz_apply", "fuzz_decompress", "fuzz_image", "fuzz_scenario"):
        p = subprocess.run([script, "run", fuzz_build, t, str(seconds)], capture_output=True, text=True)
        line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
        print("  " + line)
        try:
            out[t] = int(line.split(" executions")[0].split()[-1]) / seconds
        except (ValueError, IndexError):
            out[t] = None
    return out


def main():
    ap = arg_parser(__doc__)
    ap.add_argument("--build", required=True)
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fuzz-seconds", type=int, default=30)
    a = ap.parse_args()
    results = {}
    for driver in ("vfs", "overlay"):
        r = lock_bench(a.cowlab, driver, a.readers, a.seconds, a.rounds)
        results[f"lock_{driver}"] = r
        print(f"{driver}: {a.readers} readers + 1 writer, medians of {a.rounds} interleaved {a.seconds:g}s runs: "
              f"reads/s shared {r['shared']['reads_per_s']:.1f} vs exclusive {r['exclusive']['reads_per_s']:.1f} "
              f"(x{r['read_ratio_shared_vs_exclusive']:.2f}), writes/s shared {r['shared']['writes_per_s']:.1f} vs "
              f"exclusive {r['exclusive']['writes_per_s']:.1f} (x{r['write_ratio_shared_vs_exclusive']:.2f})")
    print(f"fuzzing throughput ({a.fuzz_seconds}s per target):")
    results["fuzz_execs_per_s"] = fuzz_bench(a.build, a.fuzz_seconds)
    write_result(a.out, "store_lock_bench", results)


if __name__ == "__main__":
    main()
