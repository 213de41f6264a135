"""`cowlab scenario reduce --profile` of a scenario that panics the guest's kernel (issue 13).

The one-guest reduction dies with the kernel, so cowlab reduces again with one guest per
candidate; the result must be the panicking core (the crash_kernel step) without the noise
around it.  About ten guest boots: `make test-reduce-panic`, not part of `make test`.
"""
import os
import shutil
import subprocess
import tempfile

import yaml

from conftest import COWLAB, FIXTURES

# A panic among noise, shared with drivers/scenario/reduce_test.cpp.
NOISY_PANIC = os.path.join(FIXTURES, "panics-among-noise.yaml")


def test_reduce_keeps_a_kernel_panic(profile):
    with tempfile.TemporaryDirectory() as d:
        src = shutil.copy(NOISY_PANIC, os.path.join(d, "panic.yaml"))
        out = os.path.join(d, "reduced.yaml")
        p = subprocess.run([COWLAB, "scenario", "reduce", src, "--driver", "vfs", "--profile", profile, "-o", out],
                           capture_output=True, text=True, timeout=5400)
        assert p.returncode == 0, p.stderr[-5000:]
        assert "ended with panic" in p.stderr and "one guest per candidate" in p.stderr, p.stderr[-3000:]
        assert 'kept failure "run ends in panic"' in p.stderr, p.stderr[-3000:]
        got = yaml.safe_load(open(out))
    assert got["steps"] == [{"op": "crash_kernel"}], got
    assert [c["id"] for c in got["containers"]] == ["c1"], got
    assert not got["layers"][0].get("entries"), got


def test_interrupted_reduction_leaves_nothing_behind(profile):
    import glob
    import signal
    import time
    before = set(glob.glob("/var/tmp/cowlab-reduce-*"))
    with tempfile.TemporaryDirectory() as d:
        src = shutil.copy(NOISY_PANIC, os.path.join(d, "panic.yaml"))
        p = subprocess.Popen([COWLAB, "scenario", "reduce", src, "--driver", "vfs", "--profile", profile],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Interrupted in the per-candidate mode, while a candidate's guest runs.
        seen = ""
        deadline = time.monotonic() + 1800
        while "one guest per candidate" not in seen and time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            seen += line
        assert "one guest per candidate" in seen, seen
        time.sleep(20)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGTERM, (p.returncode, err[-2000:])
    assert "interrupted" in err, err[-2000:]
    assert set(glob.glob("/var/tmp/cowlab-reduce-*")) == before, "the candidates' directory was left behind"
    assert not os.path.exists(os.path.join(os.path.expanduser("~"), ".cache", "cowlab", "run", f"{p.pid}-0"))
