"""Fixtures for host integration tests: they drive the real `cowlab` binary as root."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

COWLAB = os.environ.get("COWLAB_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "drivers", "cli", "cowlab")
# Scenarios that host and guest tests share (tests/fixtures/*.yaml).
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


class Cowlab:
    def __init__(self, root, driver=None):
        self.root = root
        self.driver = driver

    def run(self, *args, input=None, check=False, driver=True):
        cmd = [COWLAB, "--root", self.root]
        if self.driver and driver:
            cmd += ["--driver", self.driver]
        cmd += list(args)
        p = subprocess.run(cmd, input=input, capture_output=True, timeout=600)
        if check and p.returncode != 0:
            raise AssertionError(f"{cmd} failed ({p.returncode}): {p.stderr.decode()}")
        return p

    def json(self, *args):
        p = self.run("--json", *args, check=True)
        return json.loads(p.stdout)


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path + "/")]


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="cowlab-host-", dir="/var/tmp")
    yield d
    for m in reversed(mounts_under(d)):
        subprocess.run(["umount", "-l", m])
    leftover = mounts_under(d)
    shutil.rmtree(d, ignore_errors=True)
    assert not leftover, f"mounts left behind: {leftover}"


@pytest.fixture(params=["vfs", "overlay"])
def cow(request, workdir):
    c = Cowlab(os.path.join(workdir, "root"), request.param)
    yield c
    c.run("wipe")
    assert not mounts_under(c.root), "mounts left behind by the test"
