"""The zfs, devicemapper and aufs driver suites in guests (issue 4): unit, conformance (graphtest
port), whiteout and regression scenarios, and the security corpus, each followed by a check that
it left no dataset, pool, dm device, mount or loop device behind (tests/vm/guest_driver_suites.sh does the
work inside the guest; this file only boots guests and reads their verdicts).

Run by ctest as vm-zfs-suites, vm-devicemapper-suites and vm-aufs-suites (tests/vm/CMakeLists.txt), not collected by
the plain `pytest tests/vm` run (its name does not start with test_).

Env: COWLAB_BIN, COWLAB_CONFORMANCE_BIN, COWLAB_UNIT_TESTS_BIN (the binaries copied into the
guest), COWLAB_VM_PROFILES (zfs, devicemapper: every listed profile), COWLAB_AUFS_KERNEL (a bzImage with
aufs, packaged as the profile "aufs"; unset, a built "aufs" profile is used as it is, e.g. one from
`cowlab kernel build --profile aufs`; with neither the aufs suites are skipped with that reason)
and COWLAB_AUFS_MODULES (its modules directory, if it has modules), COWLAB_MEASURE_CREATE=1 (also time container creation
on a 1 GiB vs a 10 MiB image).
"""
import os
import subprocess
import sys

import pytest

from conftest import HERE, require_aufs_kernel, vm_run

REPO = os.path.dirname(os.path.dirname(HERE))
SUITES = ("unit", "conformance", "whiteout", "regression", "security")


# Where the build puts each binary, relative to the build dir holding COWLAB_BIN
# (<build>/drivers/cli/cowlab), for runs that only set COWLAB_BIN (make test-kernels).
BUILD_PATHS = {"COWLAB_CONFORMANCE_BIN": ("tests", "conformance", "cowlab_conformance"),
               "COWLAB_UNIT_TESTS_BIN": ("drivers", "cowlab_unit_tests")}


def binary(var):
    path = os.environ.get(var)
    if not path and os.environ.get("COWLAB_BIN"):
        build = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(os.environ["COWLAB_BIN"]))))
        path = os.path.join(build, *BUILD_PATHS[var])
    assert path and os.access(path, os.X_OK), f"{var} must name the built binary (got {path!r})"
    return path


@pytest.fixture
def payload(tmp_path):
    sec = tmp_path / "security"
    subprocess.run([sys.executable, os.path.join(HERE, "security_tars.py"), str(sec)], check=True)
    return ["--with-cowlab",
            "--payload", f"{binary('COWLAB_CONFORMANCE_BIN')}:bin/cowlab_conformance",
            "--payload", f"{binary('COWLAB_UNIT_TESTS_BIN')}:bin/cowlab_unit_tests",
            "--payload", f"{os.path.join(HERE, 'guest_driver_suites.sh')}:guest_driver_suites.sh",
            "--payload", f"{os.path.join(REPO, 'scenarios')}:scenarios",
            "--payload", f"{sec}:security"]


def check_verdicts(r, driver):
    print(r.stdout)
    print(r.stderr[-20000:], file=sys.stderr)
    for suite in SUITES + (("readers",) if driver == "aufs" else ()):
        assert f"SUITE {suite} PASS" in r.stdout, f"{driver} suite {suite} did not pass\n{r!r}"
    assert "LEFTOVER" not in r.stdout, f"a {driver} suite left state behind\n{r!r}"
    assert r.rc == 0, r


def test_zfs_suites(profile, payload):
    env = ["env", "MEASURE_CREATE=1"] if os.environ.get("COWLAB_MEASURE_CREATE") == "1" else []
    r = vm_run(profile, "--disk", "6G", "--disk", "12G", "--memory", "1536", "--timeout", "5400", *payload,
               cmd=[*env, "bash", "guest_driver_suites.sh", "zfs"], timeout=6000)
    check_verdicts(r, "zfs")


def test_devicemapper_suites(profile, payload):
    env = ["env", "MEASURE_CREATE=1"] if os.environ.get("COWLAB_MEASURE_CREATE") == "1" else []
    r = vm_run(profile, "--disk", "12G", "--memory", "1536", "--timeout", "5400", *payload,
               cmd=[*env, "bash", "guest_driver_suites.sh", "devicemapper"], timeout=6000)
    check_verdicts(r, "devicemapper")


def test_aufs_suites(payload):
    args = require_aufs_kernel()
    r = vm_run("aufs", *args, "--disk", "8G", "--timeout", "5400", *payload,
               cmd=["bash", "guest_driver_suites.sh", "aufs"], timeout=6000)
    assert r.rc != 77, f"the aufs profile's kernel ({' '.join(args) or 'as built'}) has no aufs\n{r!r}"
    check_verdicts(r, "aufs")
