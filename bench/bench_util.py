"""Helpers shared by the `make bench` scripts: running commands and timing them, the btrfs loop
device, cowlab and containers-storage stores, the default matrix, and the common command line
(--cowlab, --out, optional --profile/--scenarios) with the result file each script writes."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def sh(*cmd, input=None, check=True, cwd=None):
    p = subprocess.run(cmd, input=input, capture_output=True, cwd=cwd)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.decode()[-2000:]}")
    return p


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sync_drop():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError:
        pass


class Loop:
    """A btrfs filesystem on a loop device, mounted under `base`."""

    def __init__(self, base, size="6G"):
        self.img = os.path.join(base, "btrfs.img")
        self.mnt = os.path.join(base, "btrfs")
        sh("truncate", "-s", size, self.img)
        self.dev = sh("losetup", "-f", "--show", self.img).stdout.decode().strip()
        sh("mkfs.btrfs", "-q", self.dev)
        os.makedirs(self.mnt)
        sh("mount", self.dev, self.mnt)

    def close(self):
        sh("umount", self.mnt, check=False)
        sh("losetup", "-d", self.dev, check=False)


def cowlab(binary, root, driver, *args, input=None):
    return sh(binary, "--root", root, "--driver", driver, *args, input=input)


def cstorage(root, driver, *args, input=None):
    return sh("containers-storage", "--graph", root, "--run", root + "-run", "--storage-driver", driver,
              *args, input=input)


def wipe_cs(root, driver):
    sh("containers-storage", "--graph", root, "--run", root + "-run", "--storage-driver", driver, "wipe",
       check=False)
    sh("containers-storage", "--graph", root, "--run", root + "-run", "--storage-driver", driver, "shutdown",
       check=False)
    for p in (root, root + "-run"):
        if os.path.exists(p):
            subprocess.run(["umount", "-R", p], capture_output=True)
            shutil.rmtree(p, ignore_errors=True)


def wipe_cowlab(binary, root, driver):
    sh(binary, "--root", root, "--driver", driver, "wipe", check=False)
    shutil.rmtree(root, ignore_errors=True)


def cstorage_import_s(root, driver, tar):
    """Seconds for `containers-storage import-layer` of `tar` into a fresh store at `root`
    (caches dropped first; the store wiped after), or None with the reason on stderr."""
    sync_drop()
    try:
        return timed(lambda: cstorage(root, driver, "import-layer", "--file", tar))
    except RuntimeError as e:
        print(f"containers-storage {driver}: {e}", file=sys.stderr)
        return None
    finally:
        wipe_cs(root, driver)


def run_matrix(binary, profile, scenarios, out, *extra, drivers="all"):
    """Wall seconds of `cowlab matrix` over `drivers` on `profile` (exit 3, cells that did not
    pass, still counts as a complete run)."""
    t0 = time.monotonic()
    p = subprocess.run([binary, "matrix", "--profiles", profile, "--drivers", drivers, "--out", out, *extra, scenarios],
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    if p.returncode not in (0, 3):
        raise SystemExit(f"matrix {' '.join(extra)} failed ({p.returncode}): {p.stderr[-3000:]}")
    return wall


def arg_parser(doc, profile=False, scenarios=False):
    """The command line every bench script shares: --cowlab, --out, and --profile/--scenarios
    for the ones that run guests."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--cowlab", required=True)
    ap.add_argument("--out", default="bench-results")
    if scenarios:
        ap.add_argument("--scenarios", required=True)
    if profile:
        ap.add_argument("--profile", default="debian-6.1")
    return ap


def write_result(out, name, result):
    """Writes <out>/<name>.json."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(result, f, indent=2)
