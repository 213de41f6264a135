"""Power-cut tests in guests (issue 12, docs/crash.md): `cowlab crash run` records the crash
scenarios of scenarios/crash on dm-log-writes and checks every crash state, for one driver per
ctest entry (vm-crash-DRIVER, tests/vm/CMakeLists.txt).

Each test also runs the deliberately broken store (COWLAB_TEST_FAULT=skip-layer-sync: no data
barrier before a layer is marked complete) on the layer-import scenario where that bug can show,
and asserts that the crash test catches it: a checker that cannot fail proves nothing.

test_crash_short is the ctest entry vm-crash-short (`make test`): one guest boot on the default
profile, the layer-import scenario on vfs and overlay at every flush point, the same on vfs
with the skip-layer-sync fault, which must be caught, and devicemapper's container-create with
its pool metadata damaged, which thin_check must catch.  test_crash (every scenario, every
driver) and test_crash_aufs (the bring-your-own aufs kernel) are `make test-crash`.

Not collected by a plain `pytest tests/vm` run (its name does not start with test_).

Env: COWLAB_BIN (the cowlab binary copied into the guest), COWLAB_VM_PROFILES (default
debian-6.1), COWLAB_CRASH_RANDOM (random points per crashed phase, default: the scenarios').
"""
import json
import os
import sys

import pytest

from conftest import HERE, require_aufs_kernel, vm_run

REPO = os.path.dirname(os.path.dirname(HERE))
SCENARIOS = os.path.join(REPO, "scenarios", "crash")

# Where skipping the data sync must be caught.  devicemapper is not listed: its layers live on
# thin devices that apply_diff unmounts, and that unmount flushes them through the pool's
# loop files, so the store-level sync is redundant there (the fault is invisible by design).
FAULT_CAUGHT = {"vfs", "overlay", "btrfs"}


def crash_run(profile, driver, files, env=(), random=None, vm_args=()):
    if random is None and os.environ.get("COWLAB_CRASH_RANDOM"):
        random = os.environ["COWLAB_CRASH_RANDOM"]
    args = ["--crash-random", str(random)] if random is not None else []
    guest_files = [f"$COWLAB_PAYLOAD/crash/{f}" for f in files]
    script = ("set -- $COWLAB_DISKS; "
              f"exec env {' '.join(env)} $COWLAB_PAYLOAD/bin/cowlab crash run --driver {driver} --device $1 "
              f"{' '.join(args)} {' '.join(guest_files)}")
    r = vm_run(profile, *vm_args, "--disk", "12G", "--memory", "1536", "--timeout", "3000", "--hang-timeout", "600",
               "--with-cowlab", "--payload", f"{SCENARIOS}:crash", cmd=["sh", "-c", script], timeout=3600)
    print(r.stderr[-30000:], file=sys.stderr)
    results = []
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            results.append(json.loads(line))
    return r, results


def summary(results):
    return "\n".join(f"{x['scenario']}: {x['status']} {x.get('reason', '')} states={x['states_checked']} "
                     f"flush={x['flush_points']} random={x['random_points']} entries={x['log_entries']} "
                     f"record={x['record_s']:.1f}s check={x['check_s']:.1f}s findings={x['findings'][:3]}"
                     for x in results)


def check_every_scenario_passes(r, results, files, where):
    """Every crash scenario of `files` ran and passed, each having checked a state per flush."""
    print(summary(results))
    assert len(results) == len(files), f"one result per scenario expected\n{r!r}"
    for x in results:
        assert x["status"] == "pass", f"{x['scenario']} on {where}: {x['status']}\n{summary([x])}\n{r!r}"
        # Every crashed phase writes and flushes: a run that checked nothing is a broken runner.
        assert x["flush_points"] > 0 and x["states_checked"] >= x["flush_points"], summary([x])
    assert r.rc == 0, r


@pytest.mark.parametrize("driver", ["vfs", "overlay", "btrfs", "devicemapper", "zfs"])
def test_crash(profile, driver):
    files = sorted(f for f in os.listdir(SCENARIOS) if f.endswith(".yaml"))
    r, results = crash_run(profile, driver, files)
    check_every_scenario_passes(r, results, files, driver)

    if driver not in FAULT_CAUGHT:
        return
    r, results = crash_run(profile, driver, ["layer-import.yaml"], env=["COWLAB_TEST_FAULT=skip-layer-sync"])
    print("with COWLAB_TEST_FAULT=skip-layer-sync:\n" + summary(results))
    (x,) = results
    assert x["status"] == "fail", f"the crash test missed a store that skips its data sync on {driver}\n{summary([x])}"
    assert any(f["invariant"] in ("layer-content", "committed-present", "container-content")
               for f in x["findings"]), summary([x])
    assert r.rc == 1, r


def test_crash_short(profile):
    """The crash oracle on a real kernel within `make test`: both ways it can answer, for cowlab
    and for the kernel facility.  Layer import at every flush point on vfs, overlay and btrfs and
    container create on devicemapper (loop-lvm thin pool) must pass; a store that skips its data
    sync must fail.  The last run damages devicemapper's pool metadata on purpose
    (COWLAB_TEST_FAULT=corrupt-thin-metadata: one byte of the superblock, under its checksum)
    and requires thin_check to catch it at every state, reported as dm-thin's failure
    (`thin-check`, counted in kernel_failures), none as cowlab's."""
    script = ("set -- $COWLAB_DISKS; B=$COWLAB_PAYLOAD/bin/cowlab; S=$COWLAB_PAYLOAD/crash; "
              "for d in vfs overlay btrfs; do $B crash run --driver $d --device $1 --crash-random 0 "
              "$S/layer-import.yaml || exit $?; done; "
              "$B crash run --driver devicemapper --device $1 --crash-random 0 $S/container-create.yaml || exit $?; "
              "COWLAB_TEST_FAULT=skip-layer-sync $B crash run --driver vfs --device $1 --crash-random 0 "
              "$S/layer-import.yaml; echo fault-run-exit=$?; "
              "COWLAB_TEST_FAULT=corrupt-thin-metadata $B crash run --driver devicemapper --device $1 "
              "--crash-random 0 $S/container-create.yaml; echo thin-fault-run-exit=$?")
    r = vm_run(profile, "--disk", "12G", "--memory", "1536", "--timeout", "1800", "--hang-timeout", "600",
               "--with-cowlab", "--payload", f"{SCENARIOS}:crash", cmd=["sh", "-c", script], timeout=2400)
    print(r.stderr[-20000:], file=sys.stderr)
    results = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    print(summary(results))
    print(f"guest wall time {r.wall:.0f} s")
    assert r.rc == 0 and len(results) == 6, f"six crash runs expected\n{r!r}"
    assert [x["driver"] for x in results[:4]] == ["vfs", "overlay", "btrfs", "devicemapper"], summary(results)
    for x in results[:4]:
        assert x["status"] == "pass", f"{x['driver']}: {x['status']}\n{summary([x])}"
        assert x["flush_points"] > 0 and x["states_checked"] == x["flush_points"], summary([x])
    fault = results[4]
    assert fault["driver"] == "vfs"
    assert fault["status"] == "fail", f"the crash test missed a store that skips its data sync\n{summary([fault])}"
    assert any(f["invariant"] in ("layer-content", "committed-present") for f in fault["findings"]), summary([fault])
    assert "fault-run-exit=1" in r.stdout, r.stdout[-2000:]
    thin = results[5]
    assert thin["driver"] == "devicemapper"
    assert thin["status"] == "kernel-failure", f"a damaged thin pool went unnoticed\n{summary([thin])}"
    assert thin["states_checked"] > 0 and thin["kernel_failures"] == thin["states_checked"], summary([thin])
    assert {f["invariant"] for f in thin["findings"]} == {"thin-check"}, summary([thin])
    assert all("thin_check" in f["observed"] for f in thin["findings"]), thin["findings"][:2]
    assert "thin-fault-run-exit=1" in r.stdout, r.stdout[-2000:]


def test_crash_aufs():
    """Every crash scenario on aufs, on the profile `aufs` (built by `cowlab kernel build`, or from
    COWLAB_AUFS_KERNEL, as tests/vm/driver_suites.py); without one it is skipped with that reason."""
    args = require_aufs_kernel()
    files = sorted(f for f in os.listdir(SCENARIOS) if f.endswith(".yaml"))
    r, results = crash_run("aufs", "aufs", files, vm_args=args)
    check_every_scenario_passes(r, results, files, "aufs")
