"""End-to-end tests of disposable guests through `cowlab vm` (see docs/vm.md)."""
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import COWLAB, HERE, qemu_pids, run_dirs, vm_run


def test_output_and_exit_status_come_back(profile):
    r = vm_run(profile, cmd=["sh", "-c", "echo hello-out; echo hello-err >&2; exit 7"])
    assert r.rc == 7, r
    assert r.stdout == "hello-out\n", r
    assert "hello-err" in r.stderr, r
    assert r.result["status"] == "fail" and r.result["exit_code"] == 7, r
    ok = vm_run(profile, cmd=["true"])
    assert ok.rc == 0 and ok.result["status"] == "pass", ok


def test_guest_runs_the_profiles_kernel(profile, manifest):
    r = vm_run(profile, cmd=["uname", "-r"])
    assert r.rc == 0, r
    assert r.stdout.strip() == manifest["kernel_release"], r
    assert r.result["kernel_release"] == manifest["kernel_release"]


def test_storage_facilities_load_and_work(profile):
    r = vm_run(profile, "--disk", "2G", "--disk", "1G", "--disk", "1G", "--payload", os.path.join(HERE, "storage.sh"),
               "--timeout", "400", cmd=["bash", "storage.sh"], timeout=900)
    assert r.rc == 0, r
    for facility in ("dm-thin", "btrfs", "zfs", "overlay"):
        assert f"OK {facility}" in r.stdout, r


def test_forced_panic_is_reported_as_panic_within_seconds(profile):
    r = vm_run(profile, "--timeout", "300", cmd=["sh", "-c", "echo c > /proc/sysrq-trigger; sleep 300"])
    assert r.rc == 254, r
    assert r.result["status"] == "panic", r
    assert "Kernel panic" in r.result["console_excerpt"], r
    # Detected from the console, not by waiting for a timeout: seconds after the command started.
    assert r.result["total_seconds"] - r.result["boot_seconds"] < 20, r


def test_hanging_command_is_a_timeout(profile):
    r = vm_run(profile, "--timeout", "5", cmd=["sleep", "600"])
    assert r.rc == 124, r
    assert r.result["status"] == "timeout", r
    # The guest's own time, from its guest slot on: the wall time of `vm run` also holds the
    # wait for a slot (386 s once, beside other suites' guests), which says nothing about
    # whether the timeout was honoured.
    assert r.result["total_seconds"] < 120, r


def test_silent_guest_is_a_hang(profile):
    # Freeze the agent's heartbeat while the command sleeps silently: the host sees no output.
    r = vm_run(profile, "--timeout", "300", "--hang-timeout", "10",
               cmd=["sh", "-c", 'kill -STOP "$COWLAB_HEARTBEAT_PID"; sleep 300'])
    assert r.rc == 252, r
    assert r.result["status"] == "hang", r
    assert r.result["total_seconds"] < 120, r  # from the slot on, as above


def test_kernel_warning_is_a_splat(profile):
    # A WARNING-shaped kernel log line (injected through /dev/kmsg) turns a passing command into a
    # splat, with the line reported.
    r = vm_run(profile, cmd=["sh", "-c", "echo 'WARNING: CPU: 0 PID: 1 at fs/cowlab-test.c:1 injected' > /dev/kmsg"])
    assert r.rc == 251, r
    assert r.result["status"] == "splat" and r.result["exit_code"] == 0, r
    assert any("cowlab-test" in s for s in r.result["splats"]), r


def test_two_guests_in_parallel_do_not_interfere(profile):
    script = ('set -e; echo "$TOKEN" > /root/token; dd if=/dev/zero of="$COWLAB_DISKS" bs=1M count=1 status=none; '
              'echo "$TOKEN" | dd of="$COWLAB_DISKS" conv=notrunc status=none; sleep 8; '
              'ls /root; head -c 32 "$COWLAB_DISKS" | tr -d "\\0"; echo')
    results, procs = {}, {}

    def one(token):
        results[token] = vm_run(profile, "--disk", "64M", cmd=["env", f"TOKEN={token}", "sh", "-c", script])

    threads = [threading.Thread(target=one, args=(t,)) for t in ("alpha", "bravo")]
    for t in threads:
        t.start()
    # Watch the guests' QEMU processes: both must be alive at the same moment at least once.
    seen_together = False
    while any(t.is_alive() for t in threads):
        owners = {os.path.basename(d).split("-")[0] for d in run_dirs()}
        alive = [o for o in owners if o.isdigit() and qemu_pids(owner=int(o))]
        seen_together |= len(alive) >= 2
        time.sleep(0.2)
    for t in threads:
        t.join()
    for token, other in (("alpha", "bravo"), ("bravo", "alpha")):
        r = results[token]
        assert r.rc == 0, r
        assert r.stdout.split() == ["token", token], r  # its own root file and disk, not the other's
        assert other not in r.stdout
    assert seen_together, "the two guests never ran at the same time"


def test_nothing_left_behind(profile):
    for cmd in (["true"], ["sh", "-c", "echo c > /proc/sysrq-trigger"], ["sleep", "100"]):
        r = vm_run(profile, "--disk", "1G", "--timeout", "3", cmd=cmd)
        assert r.result["status"] in ("pass", "panic", "timeout"), r
        assert qemu_pids(owner=r.pid) == [], f"QEMU left running after {cmd}"
        assert run_dirs(owner=r.pid) == [], f"scratch files left after {cmd}"


def test_sigterm_stops_the_guest_and_cleans_up(profile):
    proc = subprocess.Popen([COWLAB, "vm", "run", "--profile", profile, "--disk", "1G", "--",
                             "sh", "-c", "echo started; sleep 600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "started", proc.stderr.read()
    pids = qemu_pids(owner=proc.pid)
    assert pids, "no QEMU process while the guest runs"
    assert run_dirs(owner=proc.pid), "no run directory while the guest runs"
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    assert rc == 128 + signal.SIGTERM, proc.stderr.read()
    assert qemu_pids(owner=proc.pid) == [], "QEMU still running after SIGTERM"
    assert run_dirs(owner=proc.pid) == [], "scratch files left behind"


@pytest.mark.parametrize("args,needle", [
    (["--profile", "no-such-profile", "--", "true"], "no-such-profile"),
    (["--disk", "4X", "--", "true"], "'4X'"),
    (["--kernel", "/nonexistent/bzImage", "--", "true"], "/nonexistent/bzImage"),
    (["--payload", "/nonexistent/file", "--", "true"], "/nonexistent/file"),
    (["--"], "no command"),
])
def test_bad_input_is_a_clear_error(args, needle):
    p = subprocess.Popen([COWLAB, "vm", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode not in (0, 124, 125), (p.returncode, err)
    assert needle in err, err
    assert run_dirs(owner=p.pid) == []
