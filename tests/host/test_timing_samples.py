"""Timed container creation with `samples:` (docs/scenarios.md, Containers).

The claims `snapshot-cost-vs-layer-size` and `create-cost-vs-image-size` compare two creation
times of ~20 ms each.  One stall outside the driver — the host disk's cache flush under the
loop device's fsync, the scheduler — made CI fail with a btrfs ratio of 11.29 against a bound
of 3 (create.child-big 0.23 s vs child-small 0.02 s).  Such delays only ever add time, so
create.<id>.time with `samples: N` is the fastest of N creations.

The stall is injected for real: strace delays the snapshot ioctl of the first creation by
1.5 s (`inject=ioctl:delay_enter`).  With one sample the measurement carries the stall (the
fault is real and visible); with five it does not.
"""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import COWLAB

STALL_US = 1_500_000

SCENARIO = """\
scenario: timing-samples
description: one container on a 1 MiB image, its creation timed {samples} time(s)
layers:
  - id: small
    entries:
      - {{path: payload, size: 1MiB, pattern: random, seed: 41}}
containers:
  - {{id: c1, image: small, samples: {samples}}}
expect:
  - measure: create.c1.time
    max: 0.75
"""


def write(workdir, samples):
    path = os.path.join(workdir, f"samples-{samples}.yaml")
    with open(path, "w") as f:
        f.write(SCENARIO.format(samples=samples))
    return path


def first_snapshot_ioctl(workdir, scenario):
    """The runner's pid-local count of ioctl calls up to its first BTRFS_IOC_SNAP_CREATE_V2:
    what strace's `when=` counts."""
    trace = os.path.join(workdir, "trace")
    subprocess.run(["strace", "-f", "-qq", "-o", trace, "-e", "trace=ioctl", COWLAB, "scenario", "run",
                    "--driver", "btrfs", "--out", os.path.join(workdir, "probe.jsonl"), scenario],
                   check=True, capture_output=True, timeout=600)
    counts = {}
    for line in open(trace):
        m = re.match(r"(\d+)\s+ioctl\(", line)
        if not m:
            continue
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        if "BTRFS_IOC_SNAP_CREATE_V2" in line:
            return counts[m.group(1)]
    raise AssertionError("no snapshot ioctl in the trace of a btrfs container creation")


def run_stalled(workdir, scenario, when):
    out = os.path.join(workdir, os.path.basename(scenario) + ".jsonl")
    p = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=ioctl",
                        "-e", f"inject=ioctl:delay_enter={STALL_US}:when={when}",
                        COWLAB, "scenario", "run", "--driver", "btrfs", "--out", out, scenario],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode in (0, 1), p.stderr
    return json.loads(open(out).read().splitlines()[0])


@pytest.fixture
def strace():
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (make deps installs it)")


def test_one_sample_carries_a_stall_five_do_not(strace, workdir):
    five = write(workdir, 5)
    when = first_snapshot_ioctl(workdir, five)
    one = run_stalled(workdir, write(workdir, 1), when)
    # The fault is real: one sample is the stalled creation.
    assert one["measurements"]["create.c1.time"] >= STALL_US / 1e6, one
    assert one["status"] == "fail", one
    best = run_stalled(workdir, five, when)
    assert best["measurements"]["create.c1.time"] < 0.75, best
    assert best["status"] == "pass", best


@pytest.mark.parametrize("value,message", [
    ("0", "samples: must be 1..32, got 0"),
    ("33", "samples: must be 1..32, got 33"),
    ("many", "expected an integer"),
])
def test_bad_samples_are_refused(value, message, workdir):
    path = os.path.join(workdir, "bad.yaml")
    with open(path, "w") as f:
        f.write(SCENARIO.format(samples=value))
    p = subprocess.run([COWLAB, "scenario", "check", path], capture_output=True, text=True)
    assert p.returncode == 1, p  # `scenario check`: 1 = the file is not a valid scenario
    assert message in p.stderr and "bad.yaml" in p.stderr, p.stderr


GENERATED = """\
scenario: timing-samples-generated
description: generated containers take samples as single ones do
layers:
  - id: small
    entries:
      - {{path: payload, size: 1MiB, pattern: random, seed: 41}}
containers:
  - generate: {{count: 2, id: "c${{i}}", image: small, samples: {samples}}}
expect:
  - measure: create.c2.time
    max: 10
"""


def test_generated_containers_take_samples(workdir):
    path = os.path.join(workdir, "gen.yaml")
    with open(path, "w") as f:
        f.write(GENERATED.format(samples=3))
    out = os.path.join(workdir, "gen.jsonl")
    p = subprocess.run([COWLAB, "scenario", "run", "--driver", "vfs", "--work-dir", workdir, "--out", out, path],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    r = json.loads(open(out).read().splitlines()[0])
    assert r["status"] == "pass" and "create.c1.time" in r["measurements"], r
    with open(path, "w") as f:
        f.write(GENERATED.format(samples=0))
    p = subprocess.run([COWLAB, "scenario", "check", path], capture_output=True, text=True)
    assert p.returncode == 1 and "containers[1].generate.samples: must be 1..32, got 0" in p.stderr, p.stderr
