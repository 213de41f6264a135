"""Fixtures for the store stress and kill tests: a store root per driver (btrfs on a loop
device), and the consistency check they all end with."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "host"))
from tarbuild import entry, make_tar  # noqa: E402

COWLAB = os.environ.get("COWLAB_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "drivers", "cli", "cowlab")


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(path + "/")]


@pytest.fixture(params=["vfs", "overlay", "btrfs"])
def store(request):
    work = tempfile.mkdtemp(prefix="cowlab-stress-", dir="/var/tmp")
    driver = request.param
    backing = None
    if driver == "btrfs":
        img = os.path.join(work, "btrfs.img")
        with open(img, "wb") as f:
            f.truncate(1 << 30)
        subprocess.run(["mkfs.btrfs", "-q", img], check=True, capture_output=True)
        backing = os.path.join(work, "mnt")
        os.mkdir(backing)
        subprocess.run(["mount", "-o", "loop", img, backing], check=True)
        root = os.path.join(backing, "root")
    else:
        root = os.path.join(work, "root")
    yield Store(root, driver)
    for m in reversed(mounts_under(work)):
        subprocess.run(["umount", "-l", m])
    shutil.rmtree(work, ignore_errors=True)


class Store:
    def __init__(self, root, driver):
        self.root = root
        self.driver = driver

    def cmd(self, *args):
        return [COWLAB, "--root", self.root, "--driver", self.driver, *args]

    def run(self, *args, input=None, env=None, check=False, timeout=600):
        p = subprocess.run(self.cmd(*args), input=input, capture_output=True, env=env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{args} failed ({p.returncode}): {p.stderr.decode()}")
        return p

    def cache_dirs(self):
        """The driver's per-layer directories (cache ids) as found on disk."""
        home = os.path.join(self.root, self.driver)
        sub = {"vfs": "dir", "btrfs": "subvolumes", "overlay": ""}[self.driver]
        d = os.path.join(home, sub)
        if not os.path.isdir(d):
            return set()
        return {n for n in os.listdir(d) if len(n) == 32}

    def check_consistent(self, where):
        """Every listed layer mounts and diffs; no orphans in the driver; no leaked mounts;
        nothing left in tmp/ or layers/ but metadata.  Returns a list of problems."""
        problems = []
        # A writer recovers whatever the last kill interrupted (and reports it).
        p = self.run("create-layer", "probe-consistency")
        if p.returncode != 0:
            return [f"{where}: a writer cannot open the store: {p.stderr.decode()}"]
        self.run("delete-layer", "probe-consistency", check=True)
        layers = json.loads(self.run("--json", "layers", check=True).stdout)
        damaged = [l for l in layers if l.get("damaged")]
        if damaged:
            problems.append(f"{where}: damaged layers {damaged}")
        good = [l for l in layers if not l.get("damaged")]
        for l in good:
            m = self.run("mount", l["id"])
            if m.returncode != 0:
                problems.append(f"{where}: mount {l['id']}: {m.stderr.decode().strip()}")
                continue
            path = m.stdout.decode().strip()
            if not os.path.isdir(path):
                problems.append(f"{where}: mount {l['id']} printed {path}, which does not exist")
            u = self.run("unmount", l["id"])
            if u.returncode != 0:
                problems.append(f"{where}: unmount {l['id']}: {u.stderr.decode().strip()}")
            d = self.run("diff", l["id"], "-o", "/dev/null")
            if d.returncode != 0:
                problems.append(f"{where}: diff {l['id']}: {d.stderr.decode().strip()}")
        # Mount references still held by earlier successful mounts are fine; count them.
        layers = json.loads(self.run("--json", "layers", check=True).stdout)
        expected = {l["cache_id"] for l in layers if not l.get("damaged")}
        orphans = self.cache_dirs() - expected
        if orphans:
            problems.append(f"{where}: orphaned driver data {sorted(orphans)}")
        missing = expected - self.cache_dirs()
        if missing:
            problems.append(f"{where}: layers without driver data {sorted(missing)}")
        mounted = {l["mount_point"] for l in layers if l.get("mount_count", 0) > 0}
        leaked = [m for m in mounts_under(self.root) if m not in mounted]
        if leaked:
            problems.append(f"{where}: leaked mounts {leaked}")
        tmp = os.listdir(os.path.join(self.root, "tmp"))
        if tmp:
            problems.append(f"{where}: left in tmp/: {tmp}")
        extra = [n for n in os.listdir(os.path.join(self.root, "layers")) if not n.endswith(".json")]
        if extra:
            problems.append(f"{where}: left in layers/: {extra}")
        return problems


def layer_tar(rng, n_files=3, size=2000):
    entries = [entry("d", "dir")]
    for i in range(n_files):
        entries.append(entry(f"d/f{rng.randrange(1000)}", data=bytes([rng.randrange(256)]) * rng.randrange(1, size)))
    if rng.random() < 0.3:
        entries.append(entry(f"d/.wh.f{rng.randrange(1000)}"))
    return make_tar(entries)
