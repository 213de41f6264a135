"""Applicability per cell (issue 9): a driver a profile cannot run is a skip whose reason names
the exact cause, decided before any guest boots, and `cowlab vm profiles` lists the same.

The default profile's Debian kernel has no aufs: its aufs cells must skip naming
CONFIG_AUFS_FS.  The newest-kernel profile whose kernel zfs-dkms does not declare
(debian-trixie-backports) is checked too when it is built (`make qualify` builds it)."""
import json
import os
import subprocess

import pytest

COWLAB = os.environ.get("COWLAB_BIN", "cowlab")
HERE = os.path.dirname(os.path.abspath(__file__))
PROFILE = os.environ.get("COWLAB_MATRIX_PROFILE", "debian-6.1")


def profiles_json(profile):
    out = subprocess.run([COWLAB, "vm", "profiles", "--profile", profile, "--no-probe", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(out.stdout)
    return entry


def run_matrix(tmp_path, profile, drivers):
    out = tmp_path / "report"
    p = subprocess.run([COWLAB, "matrix", "--profiles", profile, "--drivers", drivers, "-j", "1",
                        "--out", str(out), os.path.join(HERE, "scenarios", "pass-simple.yaml")],
                       capture_output=True, text=True, timeout=1200)
    doc = json.load(open(out / "results.json"))
    return p, {r["driver"]: r for r in doc["results"]}


def test_profiles_lists_what_each_driver_needs():
    entry = profiles_json(PROFILE)
    d = entry["drivers"]
    assert set(d) == {"aufs", "btrfs", "devicemapper", "overlay", "vfs", "zfs"}
    assert d["aufs"]["runnable"] is False
    assert d["aufs"]["reason"].startswith("aufs: no aufs in this kernel (CONFIG_AUFS_FS is not set in "), d["aufs"]
    for drv in ("btrfs", "devicemapper", "overlay", "vfs", "zfs"):
        assert d[drv]["runnable"] is True and d[drv]["reason"] == "", (drv, d[drv])
    text = subprocess.run([COWLAB, "vm", "profiles", "--profile", PROFILE, "--no-probe"],
                          capture_output=True, text=True, timeout=300).stdout
    assert "  drivers: btrfs devicemapper overlay vfs zfs\n" in text, text
    assert "aufs: no aufs in this kernel" in text, text


def test_inapplicable_cells_skip_with_the_cause_without_a_guest(tmp_path):
    p, cells = run_matrix(tmp_path, PROFILE, "aufs,vfs")
    assert p.returncode == 0, p.stderr[-3000:]
    aufs = cells["aufs"]
    assert aufs["status"] == "skip"
    assert "CONFIG_AUFS_FS is not set" in aufs["reason"], aufs
    assert aufs["duration_s"] == 0.0  # decided on the host: no guest was booted for it
    # The runnable driver of the same profile still ran in a guest.
    assert cells["vfs"]["status"] == "pass", cells["vfs"]
    assert "CONFIG_AUFS_FS is not set" in p.stderr  # the live progress line names the cause


def test_zfs_skips_naming_the_declared_range(tmp_path):
    profile = "debian-trixie-backports"
    entry = profiles_json(profile)
    if not entry["built"]:
        print(f"skipped: profile {profile} is not built (make qualify builds it)")
        pytest.skip(f"profile {profile} is not built (make qualify builds it)")
    zfs = entry["drivers"]["zfs"]
    if zfs["runnable"]:
        print(f"skipped: zfs-dkms now declares {entry['kernel_release']}")
        pytest.skip(f"zfs-dkms now declares {entry['kernel_release']}")
    assert zfs["reason"].startswith("zfs: not supported by zfs-dkms "), zfs
    assert "declares linux-libc-dev << " in zfs["reason"], zfs
    p, cells = run_matrix(tmp_path, profile, "zfs")
    assert p.returncode == 0, p.stderr[-3000:]
    assert cells["zfs"]["status"] == "skip" and cells["zfs"]["reason"] == zfs["reason"], cells["zfs"]
