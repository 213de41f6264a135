#!/usr/bin/env python3
"""Power-cut testing benchmarks for `make bench` (issue 12, docs/crash.md).

  durability: the price of the data barrier — `cowlab import-layer` of the same tar with the
              barrier and without it (COWLAB_TEST_FAULT=skip-layer-sync), and
              `containers-storage import-layer`, interleaved (A B C A B C ...), medians of N
              rounds, per host driver (vfs, overlay on the host's filesystem; btrfs on a loop
              device).  Caches are dropped before each import.
  crash rate: crash states checked per minute per driver under TCG (`cowlab crash run` of
              scenarios/crash in a guest of the default profile), skipped with the reason when
              the profile is not built.
Writes <out>/crash.json and prints a table.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_util import Loop, arg_parser, cstorage_import_s, sync_drop, wipe_cowlab, write_result  # noqa: E402


def bench_durability(binary, tar, rounds):
    rows = []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        loop = Loop(tmp)
        try:
            for driver in ["vfs", "overlay", "btrfs"]:
                base = loop.mnt if driver == "btrfs" else tmp
                t_sync, t_nosync, t_cs = [], [], []
                for r in range(rounds):
                    for label, times, env in (("sync", t_sync, {}),
                                              ("nosync", t_nosync, {"COWLAB_TEST_FAULT": "skip-layer-sync"})):
                        root = os.path.join(base, f"cow-{label}-{r}")
                        sync_drop()
                        e = dict(os.environ, **env)
                        t = time.perf_counter()
                        p = subprocess.run([binary, "--root", root, "--driver", driver, "import-layer", "img", tar],
                                           capture_output=True, env=e)
                        times.append(time.perf_counter() - t)
                        if p.returncode != 0:
                            raise RuntimeError(f"cowlab import-layer ({label}, {driver}): {p.stderr.decode()[-2000:]}")
                        wipe_cowlab(binary, root, driver)
                    cs = cstorage_import_s(os.path.join(base, f"cs-{r}"), driver, tar)
                    if cs is not None:
                        t_cs.append(cs)
                row = {"driver": driver, "with_sync_s": statistics.median(t_sync),
                       "without_sync_s": statistics.median(t_nosync)}
                row["sync_cost_ratio"] = row["with_sync_s"] / row["without_sync_s"]
                if t_cs:
                    row["containers_storage_s"] = statistics.median(t_cs)
                    row["ratio_vs_containers_storage"] = row["with_sync_s"] / row["containers_storage_s"]
                rows.append(row)
        finally:
            loop.close()
    return rows


def bench_crash_rate(binary, profile):
    built = subprocess.run([binary, "vm", "profiles", "--profile", profile, "--no-probe", "--json"],
                           capture_output=True, text=True)
    if built.returncode != 0 or not json.loads(built.stdout)[0].get("built"):
        return {"skipped": f"profile {profile} is not built (cowlab vm build --profile {profile})"}
    out = {}
    scenarios = os.path.join(REPO, "scenarios", "crash")
    for driver in ["vfs", "overlay", "btrfs", "devicemapper", "zfs"]:
        script = (f"set -- $COWLAB_DISKS; exec $COWLAB_PAYLOAD/bin/cowlab crash run --driver {driver} --device $1 "
                  "$COWLAB_PAYLOAD/crash")
        p = subprocess.run([binary, "vm", "run", "--profile", profile, "--disk", "12G", "--memory", "1536",
                            "--timeout", "3000", "--hang-timeout", "600", "--with-cowlab", "--payload",
                            f"{scenarios}:crash", "--", "sh", "-c", script], capture_output=True, text=True)
        results = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        states = sum(r["states_checked"] for r in results)
        check_s = sum(r["check_s"] for r in results)
        record_s = sum(r["record_s"] for r in results)
        out[driver] = {"scenarios": len(results), "states": states, "check_s": check_s, "record_s": record_s,
                       "states_per_minute": states / (check_s / 60) if check_s else None,
                       "statuses": sorted({r["status"] for r in results})}
    out["total_states"] = sum(v["states"] for v in out.values() if isinstance(v, dict))
    return out


def main():
    ap = arg_parser(__doc__, profile=True)
    ap.add_argument("--tar", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-guests", action="store_true")
    a = ap.parse_args()
    binary = os.path.abspath(a.cowlab)
    res = {"durability": bench_durability(binary, a.tar, a.rounds)}
    print(f"{'driver':<10} {'with sync':>10} {'no sync':>10} {'ratio':>6} {'c/storage':>10} {'ratio':>6}")
    for r in res["durability"]:
        print(f"{r['driver']:<10} {r['with_sync_s']:>10.3f} {r['without_sync_s']:>10.3f} {r['sync_cost_ratio']:>6.2f} "
              f"{r.get('containers_storage_s', float('nan')):>10.3f} {r.get('ratio_vs_containers_storage', float('nan')):>6.2f}")
    res["crash_rate"] = {"skipped": "--skip-guests"} if a.skip_guests else bench_crash_rate(binary, a.profile)
    print(json.dumps(res["crash_rate"], indent=1))
    write_result(a.out, "crash", res)


if __name__ == "__main__":
    main()
