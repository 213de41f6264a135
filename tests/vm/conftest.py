"""Fixtures for the VM tests: they drive `cowlab vm` only (orchestration, no guest logic here).

Env: COWLAB_BIN (the cowlab binary), COWLAB_VM_PROFILES (comma-separated, default debian-6.1;
`make test-kernels` passes all three).  The profiles must be built (`cowlab vm build`): ctest
runs the build as a fixture first.
"""
import json
import os
import subprocess
import tempfile

import pytest

COWLAB = os.environ.get("COWLAB_BIN", "cowlab")
PROFILES = [p for p in os.environ.get("COWLAB_VM_PROFILES", "debian-6.1").split(",") if p]
HERE = os.path.dirname(os.path.abspath(__file__))


def cache_dir():
    return os.environ.get("COWLAB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "cowlab"))


class VmRun:
    def __init__(self, proc, result, wall):
        self.proc, self.result, self.wall = proc, result, wall
        self.rc, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr

    def __repr__(self):
        r = dict(self.result or {})
        return f"rc={self.rc} status={r.get('status')} reason={r.get('reason')}\nstderr={self.stderr[-3000:]}\nexcerpt={r.get('console_excerpt', '')[-3000:]}"


def vm_run(profile, *args, timeout=600, cmd=()):
    """Runs `cowlab vm run --profile P ARGS -- CMD` and returns a VmRun with the result JSON."""
    import time
    with tempfile.TemporaryDirectory() as d:
        rj = os.path.join(d, "result.json")
        argv = [COWLAB, "vm", "run", "--profile", profile, "--result-json", rj, *args, "--", *cmd]
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        wall = time.monotonic() - t0
        result = json.load(open(rj)) if os.path.exists(rj) else None
    return VmRun(proc, result, wall)


@pytest.fixture(params=PROFILES)
def profile(request):
    return request.param


@pytest.fixture
def manifest(profile):
    out = subprocess.run([COWLAB, "vm", "profiles", "--profile", profile, "--no-probe", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(out.stdout)
    assert entry["built"], f"profile {profile} is not built: {entry.get('not_built')}"
    return entry


def qemu_pids():
    """PIDs of QEMU processes started from our cache (guests of this harness)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"qemu-system-x86_64") and any(cache_dir().encode() in a for a in cmd):
            pids.append(int(pid))
    return pids


def run_dirs():
    d = os.path.join(cache_dir(), "run")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []
