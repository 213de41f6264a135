#!/usr/bin/env python3
"""Side-by-side storage benchmarks for `make bench` (issue 2).  Every ratio compares two
commands measured in the same run, interleaved (A B A B ...), medians of N rounds, so a noisy
machine skews both sides alike.  Prints a table and writes bench-results/storage.json.

  import:  cowlab import-layer of the Debian minbase tar vs GNU `tar -x` onto the same
           filesystem (target <= 1.1) and vs `containers-storage import-layer` with the same
           driver (target <= 0.6)
  changes: overlay `changes` on a 50k-file image with 10 modified files vs
           `containers-storage changes` (target <= 0.5)
  create:  container create time on a 1 GiB vs a 10 MiB image (target <= 1.2 for overlay
           and btrfs; vfs reported)
"""
import json
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_util import (Loop, arg_parser, cowlab, cstorage, cstorage_import_s, sh, sync_drop, timed,  # noqa: E402
                        wipe_cowlab, wipe_cs, write_result)


def bench_import(binary, tar, base_for, rounds):
    rows = []
    for driver in ["vfs", "overlay", "btrfs"]:
        base = base_for(driver)
        t_cow, t_tar, t_cs = [], [], []
        for r in range(rounds):
            root = os.path.join(base, f"cow-{r}")
            sync_drop()
            t_cow.append(timed(lambda: cowlab(binary, root, driver, "import-layer", "img", tar)))
            wipe_cowlab(binary, root, driver)
            dest = os.path.join(base, f"tar-{r}")
            os.makedirs(dest)
            sync_drop()
            t_tar.append(timed(lambda: sh("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", tar,
                                          "-C", dest)))
            shutil.rmtree(dest)
            cs = cstorage_import_s(os.path.join(base, f"cs-{r}"), driver, tar)
            if cs is not None:
                t_cs.append(cs)
        row = {"driver": driver, "cowlab_s": statistics.median(t_cow), "tar_s": statistics.median(t_tar)}
        row["ratio_vs_tar"] = row["cowlab_s"] / row["tar_s"]
        if t_cs:
            row["containers_storage_s"] = statistics.median(t_cs)
            row["ratio_vs_containers_storage"] = row["cowlab_s"] / row["containers_storage_s"]
        rows.append(row)
    return rows


def make_tree_tar(path, files, size_each, dirs=100):
    """A layer tar with `files` regular files of `size_each` bytes spread over `dirs` dirs."""
    src = tempfile.mkdtemp(dir=os.path.dirname(path))
    block = os.urandom(min(size_each, 1 << 20)) if size_each else b""
    for i in range(files):
        d = os.path.join(src, f"d{i % dirs:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
            left = size_each
            while left > 0:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n
    sh("tar", "--numeric-owner", "-cf", path, "-C", src, ".")
    shutil.rmtree(src)


def changes_setup(binary, base, files, tag):
    """An overlay image of `files` 16-byte files and a container on it with 10 of them appended
    to, in cowlab and in containers-storage.  Returns (cowlab root, cs root, cs container id)."""
    tar = os.path.join(base, f"{tag}.tar")
    make_tree_tar(tar, files, 16)
    root, csroot = os.path.join(base, f"cow-{tag}"), os.path.join(base, f"cs-{tag}")
    cowlab(binary, root, "overlay", "import-layer", "img", tar)
    cowlab(binary, root, "overlay", "create-layer", "--rw", "--parent", "img", "c")
    m = cowlab(binary, root, "overlay", "mount", "c").stdout.decode().strip()
    cs_img = json.loads(cstorage(csroot, "overlay", "import-layer", "--json", "--file", tar).stdout)
    cs_img_id = cs_img["id"] if isinstance(cs_img, dict) else cs_img[0]["id"]
    cs_c = json.loads(cstorage(csroot, "overlay", "create-layer", "--json", cs_img_id).stdout)
    cs_c_id = cs_c["id"] if isinstance(cs_c, dict) else cs_c[0]["id"]
    cm = cstorage(csroot, "overlay", "mount", cs_c_id).stdout.decode().strip()
    for mp in (m, cm):
        for i in range(10):
            with open(os.path.join(mp, f"d{i:03d}", f"f{i:06d}"), "ab") as f:
                f.write(b"modified")
    cowlab(binary, root, "overlay", "unmount", "c")
    cstorage(csroot, "overlay", "unmount", cs_c_id)
    os.remove(tar)
    return root, csroot, cs_c_id


def bench_changes(binary, base, rounds):
    """overlay `changes` with 10 modified files on a 50k-file image (the target) and on a
    500-file image: cowlab reads only the upper dir, so its time should not grow with the image.
    Both tools finish in a few ms, near a process's start-up cost, so the medians are of at
    least 21 interleaved runs; `--help` of each gives that floor."""
    n = max(rounds, 21)
    big = changes_setup(binary, base, 50000, "50k")
    small = changes_setup(binary, base, 500, "500")
    t = {k: [] for k in ("cow_big", "cs_big", "cow_small", "cs_small", "cow_floor", "cs_floor")}
    for _ in range(n):
        t["cow_big"].append(timed(lambda: cowlab(binary, big[0], "overlay", "changes", "c")))
        t["cs_big"].append(timed(lambda: cstorage(big[1], "overlay", "changes", big[2])))
        t["cow_small"].append(timed(lambda: cowlab(binary, small[0], "overlay", "changes", "c")))
        t["cs_small"].append(timed(lambda: cstorage(small[1], "overlay", "changes", small[2])))
        t["cow_floor"].append(timed(lambda: sh(binary, "--help")))
        t["cs_floor"].append(timed(lambda: sh("containers-storage", "--help")))
    out_cow = cowlab(binary, big[0], "overlay", "changes", "c").stdout
    for root, csroot, _ in (big, small):
        wipe_cowlab(binary, root, "overlay")
        wipe_cs(csroot, "overlay")
    m = {k: statistics.median(v) for k, v in t.items()}
    return {"files": 50000, "modified": 10, "runs": n, "cowlab_changes_lines": len(out_cow.splitlines()),
            "cowlab_s": m["cow_big"], "containers_storage_s": m["cs_big"],
            "ratio": m["cow_big"] / m["cs_big"],
            "cowlab_500_files_s": m["cow_small"], "containers_storage_500_files_s": m["cs_small"],
            "cowlab_50k_vs_500": m["cow_big"] / m["cow_small"],
            "containers_storage_50k_vs_500": m["cs_big"] / m["cs_small"],
            "cowlab_help_s": m["cow_floor"], "containers_storage_help_s": m["cs_floor"]}


def bench_create(binary, base_for, rounds):
    rows = []
    for driver in ["vfs", "overlay", "btrfs"]:
        base = base_for(driver)
        small, big = os.path.join(base, "10m.tar"), os.path.join(base, "1g.tar")
        make_tree_tar(small, 10, 1 << 20, dirs=2)
        make_tree_tar(big, 64, 16 << 20, dirs=8)
        root = os.path.join(base, "cow-create")
        cowlab(binary, root, driver, "import-layer", "small", small)
        cowlab(binary, root, driver, "import-layer", "big", big)
        os.remove(small)
        os.remove(big)
        t_s, t_b = [], []
        for r in range(rounds):
            t_s.append(timed(lambda: cowlab(binary, root, driver, "create-layer", "--rw", "--parent", "small",
                                            f"cs{r}")))
            t_b.append(timed(lambda: cowlab(binary, root, driver, "create-layer", "--rw", "--parent", "big",
                                            f"cb{r}")))
            cowlab(binary, root, driver, "delete-layer", f"cs{r}")
            cowlab(binary, root, driver, "delete-layer", f"cb{r}")
        wipe_cowlab(binary, root, driver)
        rows.append({"driver": driver, "create_10MiB_s": statistics.median(t_s),
                     "create_1GiB_s": statistics.median(t_b),
                     "ratio": statistics.median(t_b) / statistics.median(t_s)})
    return rows


def main():
    ap = arg_parser(__doc__)
    ap.add_argument("--tar", required=True, help="the Debian minbase layer tar")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    binary = os.path.abspath(a.cowlab)
    work = tempfile.mkdtemp(prefix="cowlab-bench-", dir="/var/tmp")
    loop = Loop(work)
    host = os.path.join(work, "host")
    os.makedirs(host)
    base_for = lambda d: loop.mnt if d == "btrfs" else host
    results = {}
    try:
        results["import"] = bench_import(binary, a.tar, base_for, a.rounds)
        results["changes"] = bench_changes(binary, host, a.rounds)
        results["create"] = bench_create(binary, base_for, a.rounds)
    finally:
        loop.close()
        shutil.rmtree(work, ignore_errors=True)
    write_result(a.out, "storage", results)
    print("\nimport of the Debian minbase layer (%s):" % a.tar)
    for r in results["import"]:
        cs = f"{r['containers_storage_s']:.2f}s ratio {r['ratio_vs_containers_storage']:.2f} (target <= 0.6)" \
            if "containers_storage_s" in r else "n/a"
        print(f"  {r['driver']:8} cowlab {r['cowlab_s']:.2f}s  tar -x {r['tar_s']:.2f}s ratio "
              f"{r['ratio_vs_tar']:.2f} (target <= 1.1)  containers-storage {cs}")
    c = results["changes"]
    print(f"\noverlay changes, 50k files, 10 modified: cowlab {c['cowlab_s'] * 1000:.1f}ms  containers-storage "
          f"{c['containers_storage_s'] * 1000:.1f}ms  ratio {c['ratio']:.2f} (target <= 0.5)")
    print(f"  same on 500 files: cowlab {c['cowlab_500_files_s'] * 1000:.1f}ms (50k/500 "
          f"{c['cowlab_50k_vs_500']:.2f})  containers-storage {c['containers_storage_500_files_s'] * 1000:.1f}ms "
          f"(50k/500 {c['containers_storage_50k_vs_500']:.2f})")
    print(f"  process floor (--help): cowlab {c['cowlab_help_s'] * 1000:.1f}ms  containers-storage "
          f"{c['containers_storage_help_s'] * 1000:.1f}ms; medians of {c['runs']} interleaved runs")
    print("\ncontainer create, 1 GiB vs 10 MiB image:")
    for r in results["create"]:
        print(f"  {r['driver']:8} 10 MiB {r['create_10MiB_s']:.3f}s  1 GiB {r['create_1GiB_s']:.3f}s  ratio "
              f"{r['ratio']:.2f}" + ("" if r["driver"] == "vfs" else " (target <= 1.2)"))


if __name__ == "__main__":
    main()
