#!/usr/bin/env python3
"""The guest payload with and without debug information (issue 14), side by side in one run.

Every matrix guest gets cowlab in its initrd.  A RelWithDebInfo binary is ~90 MB, most of it DWARF;
the matrix now ships a copy stripped of debug info (harness/src/strip.cpp, the debug info kept on
the host).  This boots the same profile with each payload, alternating, and reports the initrd
size and the boot time (QEMU start to the guest command, which runs the payload's cowlab so both
binaries are shown to work), as medians and ratios.

    strip_bench.py --cowlab BUILD/drivers/cli/cowlab [--profile debian-6.1] [--runs 5] [--out DIR]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def boot(cowlab, profile, payload_args, result):
    cmd = [cowlab, "-q", "vm", "run", "--profile", profile, "--result-json", result, *payload_args, "--",
           "/bin/sh", "-c", '"$COWLAB_PAYLOAD/bin/cowlab" --version']
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.exit(f"strip_bench: {' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    r = json.load(open(result))
    if "cowlab" not in r.get("stdout", "") and "cowlab" not in p.stdout:
        sys.exit(f"strip_bench: the payload's cowlab did not run in the guest:\n{p.stdout[-2000:]}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cowlab", required=True)
    ap.add_argument("--profile", default="debian-6.1")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("COWLAB_BENCH_STRIP_RUNS", "5")))
    ap.add_argument("--out", default="bench-results")
    a = ap.parse_args()
    cowlab = os.path.abspath(a.cowlab)
    os.makedirs(a.out, exist_ok=True)
    if subprocess.run([cowlab, "-q", "vm", "build", "--profile", a.profile, "--quick-verify"]).returncode != 0:
        sys.exit(f"strip_bench: cannot build profile {a.profile}")
    kinds = {
        "unstripped": ["--payload", f"{cowlab}:bin/cowlab"],
        "stripped": ["--with-cowlab"],  # what the matrix ships
    }
    samples = {k: {"boot_seconds": [], "initrd_bytes": []} for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.runs):
            # Alternate the order so a drift in host load falls on both sides.
            order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
            for k in order:
                r = boot(cowlab, a.profile, kinds[k], os.path.join(tmp, f"{k}-{i}.json"))
                samples[k]["boot_seconds"].append(r["boot_seconds"])
                samples[k]["initrd_bytes"].append(r["initrd_bytes"])
    med = {k: {m: statistics.median(v) for m, v in s.items()} for k, s in samples.items()}
    binary_bytes = os.path.getsize(cowlab)
    res = {
        "profile": a.profile,
        "runs": a.runs,
        "binary_bytes": binary_bytes,
        "samples": samples,
        "median": med,
        "initrd_ratio_stripped_to_unstripped": med["stripped"]["initrd_bytes"] / med["unstripped"]["initrd_bytes"],
        "boot_ratio_stripped_to_unstripped": med["stripped"]["boot_seconds"] / med["unstripped"]["boot_seconds"],
    }
    for k in kinds:
        print(f"{a.profile} {k:10s} initrd {med[k]['initrd_bytes'] / 2**20:7.1f} MiB  "
              f"boot to command {med[k]['boot_seconds']:6.2f} s  (median of {a.runs})")
    print(f"stripped/unstripped: initrd {res['initrd_ratio_stripped_to_unstripped']:.3f}, "
          f"boot {res['boot_ratio_stripped_to_unstripped']:.3f}")
    with open(os.path.join(a.out, "strip-bench.json"), "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
