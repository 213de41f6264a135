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
# Scenarios that host and guest tests share (tests/fixtures/*.yaml).
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")


def cache_dir():
    return os.environ.get("COWLAB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "cowlab"))


class VmRun:
    def __init__(self, pid, rc, stdout, stderr, result, wall):
        self.pid, self.result, self.wall = pid, result, wall
        self.rc, self.stdout, self.stderr = rc, stdout, stderr

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
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"cowlab vm run did not finish in {timeout} s: {err[-2000:]}")
        wall = time.monotonic() - t0
        result = json.load(open(rj)) if os.path.exists(rj) else None
    return VmRun(proc.pid, proc.returncode, out, err, result, wall)


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


def qemu_pids(owner=None):
    """PIDs of QEMU processes of this harness's guests; with `owner`, only those started by that
    cowlab process (its run directory, run/OWNER-N, is on their command line)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"qemu-system-x86_64") and any(cache_dir().encode() in a for a in cmd):
            if owner is not None and not any(f"/run/{owner}-".encode() in a for a in cmd):
                continue
            pids.append(int(pid))
    return pids


def run_dirs(owner=None):
    """Per-guest run directories (scratch disks, sockets) in the cache; with `owner`, only those
    of that cowlab process."""
    d = os.path.join(cache_dir(), "run")
    names = sorted(os.listdir(d)) if os.path.isdir(d) else []
    return [n for n in names if owner is None or n.startswith(f"{owner}-")]


NO_AUFS_KERNEL = ("skipped: no aufs kernel configured (build the profile with `cowlab kernel build "
                  "--profile aufs ...` or set COWLAB_AUFS_KERNEL=/path/to/bzImage, see docs/aufs.md)")


def built_aufs_profile():
    """The entry of `cowlab vm profiles` for the profile "aufs" when it is built and can run the
    aufs driver (a kernel built by `cowlab kernel build --profile aufs`, or an earlier
    bring-your-own build), else None."""
    p = subprocess.run([COWLAB, "vm", "profiles", "--profile", "aufs", "--no-probe", "--json"],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        return None
    (entry,) = json.loads(p.stdout)
    if not entry.get("built") or not entry.get("drivers", {}).get("aufs", {}).get("runnable"):
        return None
    return entry


def aufs_kernel_args():
    """The `vm run` arguments for the aufs profile: `--kernel K [--modules M]` for the kernel named
    by COWLAB_AUFS_KERNEL (and COWLAB_AUFS_MODULES, if it has modules); none ([]) when that is
    unset but the profile "aufs" is built and runs aufs (used as it is: repackaging a
    `cowlab kernel build` profile as bring-your-own would drop its source record); None when
    there is neither."""
    kernel = os.environ.get("COWLAB_AUFS_KERNEL")
    if not kernel:
        return [] if built_aufs_profile() else None
    args = ["--kernel", kernel]
    if os.environ.get("COWLAB_AUFS_MODULES"):
        args += ["--modules", os.environ["COWLAB_AUFS_MODULES"]]
    return args


def build_aufs_profile(args):
    """Builds the bring-your-own profile "aufs" (its kernel packaged with the default root) from
    aufs_kernel_args(): `vm run` never builds, as the vm-image-default fixture does for the
    Debian profile.  Cached builds return at once; with no kernel given (the profile is already
    built) there is nothing to do."""
    if not args:
        return
    b = subprocess.run([COWLAB, "vm", "build", "--profile", "aufs", *args],
                       capture_output=True, text=True, timeout=3600)
    assert b.returncode == 0, f"cowlab vm build --profile aufs {' '.join(args)} failed:\n{b.stderr[-4000:]}"


def require_aufs_kernel():
    """The aufs profile's kernel arguments, with the profile built; with neither
    COWLAB_AUFS_KERNEL nor a built aufs profile the test is skipped, saying why."""
    args = aufs_kernel_args()
    if args is None:
        print(NO_AUFS_KERNEL)
        pytest.skip(NO_AUFS_KERNEL)
    build_aufs_profile(args)
    return args
