#!/usr/bin/env python3
"""Matrix benchmarks for `make bench` (issue 5), measured in one run:

  wall:     the default matrix (every scenario x every driver on debian-6.1) end to end, under
            this machine's acceleration (TCG here) -- target <= 600 s on 2 cores;
  overhead: per-scenario time inside a guest vs the same scenario on the host, for the drivers
            the host runs too (vfs, overlay, btrfs): the ratio of the two durations per cell,
            guest cells taken from the same matrix run.

Writes bench-results/matrix.json and prints a table.
"""
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import arg_parser, run_matrix, write_result  # noqa: E402


def main():
    a = arg_parser(__doc__, profile=True, scenarios=True).parse_args()
    os.makedirs(a.out, exist_ok=True)
    mdir = os.path.join(a.out, "matrix-report")
    wall = run_matrix(a.cowlab, a.profile, a.scenarios, mdir)
    guest = json.load(open(os.path.join(mdir, "results.json")))["results"]
    host_out = os.path.join(a.out, "host-scenarios.jsonl")
    if os.path.exists(host_out):
        os.remove(host_out)
    subprocess.run([a.cowlab, "scenario", "run", "--driver", "vfs,overlay,btrfs", "--out", host_out, a.scenarios],
                   capture_output=True, text=True)
    host = [json.loads(l) for l in open(host_out)]
    key = lambda r: (r["scenario"], r["driver"], json.dumps(r.get("sweep", {}), sort_keys=True))
    hmap = {key(r): r for r in host if r["status"] == "pass"}
    ratios = []
    for r in guest:
        h = hmap.get(key(r))
        if h and r["status"] == "pass" and h["duration_s"] > 0:
            ratios.append(r["duration_s"] / h["duration_s"])
    counts = {}
    for r in guest:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    result = {"profile": a.profile, "wall_seconds": wall, "target_seconds": 600, "cells": len(guest),
              "statuses": counts, "overhead_cells": len(ratios),
              "overhead_median": statistics.median(ratios) if ratios else None,
              "overhead_p90": sorted(ratios)[int(0.9 * (len(ratios) - 1))] if ratios else None}
    write_result(a.out, "matrix", result)
    print(f"default matrix on {a.profile}: {wall:.0f} s wall for {len(guest)} cells {counts} (target <= 600 s)")
    if ratios:
        print(f"per-scenario time in a guest vs on the host: median {result['overhead_median']:.1f}x, "
              f"p90 {result['overhead_p90']:.1f}x over {len(ratios)} cells")


if __name__ == "__main__":
    main()
