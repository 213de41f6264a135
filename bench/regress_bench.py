#!/usr/bin/env python3
"""Regression-hunting benchmarks for `make bench` (issue 10), measured in one run:

  repeat:  the default matrix (every scenario x every driver on debian-6.1) once, then with
           --repeat 3, then once again, back to back: the ratio of the repeated run's wall time
           to the mean single run (target <= 2.2x: repeats run in the same guest, so boots and
           image preparation are not repeated: the later runs start from a checkpoint of the store
           the first run's import left), the drift between the two single runs, then the same
           --repeat 3 with --repeat-from import (every run imports the image; skipped with
           COWLAB_BENCH_REPEAT_IMPORT=0) for what the checkpoints save, and the
           same ratio for the cells' summed time, and their time by phase (results' phases_s:
           which work the repeats redo on their fresh stores and which they share);
  bisect:  the synthetic git bisection of tests/regress (make_history.sh): wall time, steps,
           and the share spent building vs running (boot + cell runs).  Skipped with the
           reason when COWLAB_BENCH_BISECT=0.

Writes bench-results/regress.json and prints a summary.
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "..", "tests", "regress")

sys.path.insert(0, HERE)
from bench_util import arg_parser, run_matrix, write_result  # noqa: E402


def cell_seconds(matrix_dir):
    """The summed duration of a matrix run's cells (its scenarios' own work, without boots)."""
    with open(os.path.join(matrix_dir, "results.json")) as f:
        return sum(r.get("duration_s") or 0 for r in json.load(f)["results"])


def phase_seconds(matrix_dir):
    """The cells' time by phase (results' phases_s, summed over cells and their runs)."""
    with open(os.path.join(matrix_dir, "results.json")) as f:
        total = {}
        for r in json.load(f)["results"]:
            for k, v in (r.get("phases_s") or {}).items():
                total[k] = total.get(k, 0.0) + v
        return total


def bisect(cowlab, out):
    cache = os.path.join(os.environ.get("COWLAB_CACHE", os.path.expanduser("~/.cache/cowlab")), "regress")
    hist = os.path.join(cache, "linux-history")
    made = subprocess.run([os.path.join(TESTS, "make_history.sh"), hist], capture_output=True, text=True, check=True)
    good, culprit, broken = made.stdout.split()[-3:]
    bout = os.path.join(out, "bisect")
    subprocess.run(["rm", "-rf", bout], check=True)
    t0 = time.monotonic()
    # Kernels already built for these commits come from the kernel cache (no make): the build
    # share is then the work-tree refresh and the cache lookup.
    p = subprocess.run([cowlab, "bisect", "--source", hist, "--good", "synthetic-good", "--bad", "synthetic-bad",
                        "--scenario", os.path.join(TESTS, "scenarios", "copy-up-keeps-mode.yaml"),
                        "--driver", "overlay", "--repeat", "2", "--out", bout,
                        "--work-dir", os.path.join(cache, "bisect-work")],
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    steps = json.load(open(os.path.join(bout, "steps.json")))
    return {"wall_seconds": wall, "steps": len(steps["steps"]), "build_seconds": steps["build_seconds"],
            "run_seconds": steps["run_seconds"], "found": steps["first_new"], "expected": culprit,
            "correct": steps["first_new"] == culprit, "exit": p.returncode,
            "build_share": steps["build_seconds"] / wall if wall else None,
            "run_share": steps["run_seconds"] / wall if wall else None}


def main():
    ap = arg_parser(__doc__, profile=True, scenarios=True)
    ap.add_argument("--drivers", default="all", help="the matrix's drivers (default: all, the default matrix)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    # The single run brackets the repeated one (once, --repeat 3, once again): under TCG the
    # same single btrfs matrix took 178 s and then 223 s minutes later on an otherwise idle
    # machine (host-side drift), so the ratio is taken against the mean of the two single runs
    # and the drift between them is reported beside it.
    once = run_matrix(a.cowlab, a.profile, a.scenarios, os.path.join(a.out, "regress-once"), drivers=a.drivers)
    three = run_matrix(a.cowlab, a.profile, a.scenarios, os.path.join(a.out, "regress-repeat3"), "--repeat", "3",
                       drivers=a.drivers)
    again = run_matrix(a.cowlab, a.profile, a.scenarios, os.path.join(a.out, "regress-once-after"), drivers=a.drivers)
    mean_once = (once + again) / 2
    cells = {d: cell_seconds(os.path.join(a.out, d)) for d in ("regress-once", "regress-repeat3", "regress-once-after")}
    mean_cells = (cells["regress-once"] + cells["regress-once-after"]) / 2
    # Where the time went: a phase that costs 3x in the repeated run is work every run must redo
    # on its fresh store; what the repeats share (the boot, the layer tars) costs less.
    phases = {d: phase_seconds(os.path.join(a.out, d)) for d in cells}
    mean_phases = {k: (phases["regress-once"].get(k, 0) + phases["regress-once-after"].get(k, 0)) / 2
                   for k in set(phases["regress-once"]) | set(phases["regress-once-after"])
                   | set(phases["regress-repeat3"])}
    phase_ratio = {k: phases["regress-repeat3"].get(k, 0) / v for k, v in mean_phases.items() if v > 0}
    # The same repeats with every run importing the image itself (--repeat-from import, what
    # --repeat did before image checkpoints), run right after: what the checkpoints save.
    if os.environ.get("COWLAB_BENCH_REPEAT_IMPORT", "1") != "0":
        imp = run_matrix(a.cowlab, a.profile, a.scenarios, os.path.join(a.out, "regress-repeat3-import"),
                         "--repeat", "3", "--repeat-from", "import", drivers=a.drivers)
        imp_phases = phase_seconds(os.path.join(a.out, "regress-repeat3-import"))
    result = {"profile": a.profile, "phase_seconds": phases, "phase_ratio": phase_ratio, "drivers": a.drivers, "scenarios": a.scenarios, "once_seconds": once,
              "once_after_seconds": again, "repeat3_seconds": three, "ratio": three / mean_once,
              "drift": again / once, "cell_seconds": cells,
              "cell_ratio": cells["regress-repeat3"] / mean_cells if mean_cells else None, "target_ratio": 2.2}
    print(f"matrix {a.scenarios} x {a.drivers} on {a.profile}: once {once:.0f} s, --repeat 3 {three:.0f} s, once again "
          f"{again:.0f} s (drift {again / once:.2f}x): {three / mean_once:.2f}x the mean single run (target <= 2.2x); "
          f"cells' summed time {result['cell_ratio']:.2f}x")
    print("  by phase (mean single run -> --repeat 3): " + ", ".join(
        f"{k} {mean_phases[k]:.0f} s -> {phases['regress-repeat3'].get(k, 0):.0f} s"
        + (f" ({phase_ratio[k]:.2f}x)" if k in phase_ratio else "")
        for k in sorted(mean_phases, key=lambda k: -max(mean_phases[k], phases["regress-repeat3"].get(k, 0)))))
    if os.environ.get("COWLAB_BENCH_REPEAT_IMPORT", "1") != "0":
        result.update({"repeat3_import_seconds": imp, "repeat3_import_phase_seconds": imp_phases,
                       "ratio_import": imp / mean_once})
        print(f"  --repeat 3 --repeat-from import (every run imports its image): {imp:.0f} s, "
              f"{imp / mean_once:.2f}x the mean single run; image checkpoints: {three:.0f} s "
              f"({imp / three:.2f}x faster)")
    if os.environ.get("COWLAB_BENCH_BISECT", "1") == "0":
        print("synthetic bisection: skipped (COWLAB_BENCH_BISECT=0)")
    else:
        b = bisect(a.cowlab, a.out)
        result["bisect"] = b
        print(f"synthetic bisection: {b['wall_seconds']:.0f} s wall, {b['steps']} steps, build {b['build_seconds']:.0f} s "
              f"({100 * (b['build_share'] or 0):.0f} %), run {b['run_seconds']:.0f} s ({100 * (b['run_share'] or 0):.0f} %), "
              f"culprit {'found' if b['correct'] else 'NOT found'}")
    write_result(a.out, "regress", result)


if __name__ == "__main__":
    main()
