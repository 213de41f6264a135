"""Feature probes load modules only for the driver under test (issue 14): a vfs scenario run
must not modprobe zfs, aufs, dm_thin_pool, btrfs or overlay (loading zfs taints the kernel and
changes what is measured).  A modprobe wrapper first on PATH records every call."""
import os
import shutil
import subprocess

from conftest import COWLAB

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASS_SIMPLE = os.path.join(REPO, "tests", "matrix", "scenarios", "pass-simple.yaml")


def modprobe_calls(workdir, driver):
    bindir = os.path.join(workdir, "bin")
    os.makedirs(bindir, exist_ok=True)
    log = os.path.join(workdir, f"modprobe-{driver}.log")
    real = shutil.which("modprobe") or "/usr/sbin/modprobe"
    with open(os.path.join(bindir, "modprobe"), "w") as f:
        f.write(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    os.chmod(os.path.join(bindir, "modprobe"), 0o755)
    env = dict(os.environ, PATH=bindir + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    p = subprocess.run([COWLAB, "--root", os.path.join(workdir, "root"), "--driver", driver, "scenario", "run",
                        "--work-dir", workdir, PASS_SIMPLE], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    return open(log).read().split("\n") if os.path.exists(log) else []


def test_the_wrapper_sees_modprobe_calls(workdir):
    # The checker works: a zfs run asks for the zfs module (this host has none: the cell is a skip).
    calls = modprobe_calls(workdir, "zfs")
    assert any("zfs" in c for c in calls), calls


def test_vfs_loads_no_other_drivers_modules(workdir):
    calls = [c for c in modprobe_calls(workdir, "vfs") if c]
    for module in ("zfs", "aufs", "dm_thin_pool", "btrfs", "overlay"):
        assert not any(module in c for c in calls), (module, calls)


def test_overlay_probes_only_overlay(workdir):
    calls = [c for c in modprobe_calls(workdir, "overlay") if c]
    assert all("overlay" in c or c.endswith("loop") for c in calls), calls
