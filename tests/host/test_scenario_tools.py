"""`cowlab scenario export` and `cowlab scenario reduce` on the host (issue 13).

Exported scripts run with /bin/sh on real overlay and btrfs mounts; their verdict (exit 0 =
every check passed, 1 = a check failed) must equal cowlab's own for the same scenario and
driver — including scenarios broken on purpose, so a script that always passes is caught.
`reduce` must find a known minimal core hidden among irrelevant layers, entries,
containers, steps and expectations.
"""
import json
import os
import subprocess
import textwrap

import pytest

from conftest import COWLAB, FIXTURES

REPO = os.path.join(os.path.dirname(__file__), "..", "..")

# Scenarios whose steps can all be exported, and that pass on the host drivers.
EXPORTED = [
    "scenarios/regression/copy-up-breaks-hardlink.yaml",
    "scenarios/regression/copy-up-keeps-st-ino.yaml",
    "scenarios/regression/ro-then-rw-open.yaml",
    "scenarios/regression/touch-copies-up.yaml",
    "scenarios/whiteout/whiteout-then-recreate.yaml",
    "scenarios/basic/symlinks.yaml",
    # Each of these once made the script disagree (found in an aufs guest): a `same_inode_as`
    # whose expected side was never evaluated, an own-layer whiteout that deleted the entry
    # (the OCI spec: it hides only lower layers), an empty file's content that left putfile
    # without its argument.
    "scenarios/basic/hardlinks-within-layer.yaml",
    "scenarios/whiteout/whiteout-not-own-layer.yaml",
    "scenarios/crash/layer-import.yaml",
    # Exportable since `lookup`, `hold_mount` and `remove` have a shell form.
    "scenarios/crash/layer-delete.yaml",
    "scenarios/regression/removal-with-leaked-mount.yaml",
    "scenarios/regression/btrfs-nested-subvolume-removal.yaml",
    "scenarios/claims/lookup-vs-depth.yaml",
]

def cowlab(*args, check=True, timeout=900):
    p = subprocess.run([COWLAB, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode not in (0, 1):
        raise AssertionError(f"cowlab {args} exited {p.returncode}: {p.stderr}")
    return p


def write_scenario(workdir, name, text):
    """`text` as WORKDIR/NAME.yaml; returns its path."""
    path = os.path.join(workdir, name + ".yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def strings(x):
    """A parsed scenario with every scalar as its text (booleans as YAML writes them)."""
    if isinstance(x, dict):
        return {k: strings(v) for k, v in x.items()}
    if isinstance(x, list):
        return [strings(v) for v in x]
    return str(x).lower() if isinstance(x, bool) else str(x)


def cowlab_verdict(path, driver, workdir):
    p = cowlab("scenario", "run", "--driver", driver, "--work-dir", workdir, path)
    results = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1, p.stdout + p.stderr
    return results[0]["status"], p.stderr


def script_verdict(path, driver, workdir):
    out = os.path.join(workdir, "repro.sh")
    p = cowlab("scenario", "export", path, "--driver", driver, "--format", "sh", "-o", out)
    assert p.returncode == 0, p.stderr
    env = dict(os.environ, COWLAB_EXPORT_DIR=workdir)
    # With the address space of a small guest (768 MiB): an `fd_read` to the end once asked
    # perl for one 1 GiB read ("Out of memory!" in a 1 GiB guest, never on this host).
    s = subprocess.run(["/bin/sh", "-c", 'ulimit -v 786432 && exec /bin/sh "$0"', out],
                       capture_output=True, text=True, timeout=600, env=env)
    assert s.returncode in (0, 1), f"set-up failed ({s.returncode}):\n{s.stdout}\n{s.stderr}"
    # Nothing of the script may stay behind.
    assert not [d for d in os.listdir(workdir) if d.startswith("cowlab-export.")]
    return ("pass" if s.returncode == 0 else "fail"), s.stdout


@pytest.mark.parametrize("driver", ["overlay", "btrfs"])
@pytest.mark.parametrize("scenario", EXPORTED)
def test_exported_script_agrees_with_cowlab(scenario, driver, workdir):
    path = os.path.join(REPO, scenario)
    if driver == "btrfs" and "touch-metacopy" in scenario:
        pytest.skip("overlay only")
    want, log = cowlab_verdict(path, driver, workdir)
    if want == "skip":
        pytest.skip(f"{scenario} skips on {driver} here: {log.strip()}")
    got, out = script_verdict(path, driver, workdir)
    assert got == want, f"cowlab says {want}, the script {got}:\n{out}\ncowlab:\n{log}"
    assert "ok   " in out  # it really checked something


@pytest.mark.parametrize("driver", ["overlay", "btrfs"])
def test_exported_script_fails_where_cowlab_fails(driver, workdir):
    path = os.path.join(FIXTURES, "broken-on-purpose.yaml")
    want, _ = cowlab_verdict(path, driver, workdir)
    assert want == "fail"
    got, out = script_verdict(path, driver, workdir)
    assert got == "fail", out
    assert "FAIL expect 1 view c1:etc/motd exists" in out, out
    assert "FAIL step 2 rename in c1 errno" in out, out
    assert "FAIL expect 2 view c1:bin/a nlink" in out, out


def test_export_refuses_what_needs_cowlab(workdir):
    p = cowlab("scenario", "export", os.path.join(REPO, "scenarios/regression/mmap-shared-after-copy-up.yaml"),
               "--driver", "overlay", "--format", "sh", check=False)
    assert p.returncode == 1
    assert "step 2 mmap: cannot be exported to sh" in p.stderr, p.stderr
    p = cowlab("scenario", "export", os.path.join(REPO, "scenarios/regression/ro-then-rw-open.yaml"),
               "--driver", "vfs", check=False)
    assert p.returncode == 2 and "--driver must be overlay, aufs or btrfs" in p.stderr, p.stderr


# The store-level steps with a shell form, each where it could go wrong: `lookup`'s errno
# (ENOENT for a missing name, none with `distinct`), a `hold_mount` whose namespace must
# exist before the step ends, and a `remove` of a container with an open descriptor (the
# runner closes it; a script that did not would get EBUSY from umount).
STORE_STEPS = """\
scenario: store-steps
description: lookup, hold_mount and remove as an exported script runs them
layers: [{id: base, entries: [{path: f, content: "x"}, {path: d, type: dir}]}]
containers: [{id: c1, image: base}, {id: c2, image: base}, {id: c3, image: base}]
steps:
  - {op: open, in: c1, path: f, fd: r, flags: [rdonly]}
  - {op: lookup, in: c1, path: nothing-here, repeat: 3, errno: ENOENT}
  - {op: lookup, in: c1, path: d/nothing, repeat: 50, distinct: true}
  - {op: hold_mount, in: c2}
  - {op: remove, in: c1}
  - {op: remove, in: c2}
  - {op: write, in: c3, path: f, data: "y"}
expect:
  - view: {in: c3, path: f, content: "y"}
"""


@pytest.mark.parametrize("driver", ["overlay", "btrfs"])
def test_exported_store_steps_agree_with_cowlab(driver, workdir):
    path = write_scenario(workdir, "store-steps", STORE_STEPS)
    want, log = cowlab_verdict(path, driver, workdir)
    assert want == "pass", log
    got, out = script_verdict(path, driver, workdir)
    assert got == "pass", out
    for line in ("ok   step 2 lookup in c1 errno 2", "ok   step 3 lookup in c1 errno 0",
                 "ok   step 4 hold_mount in c2 errno 0", "ok   step 5 remove in c1 errno 0",
                 "ok   step 6 remove in c2 errno 0"):
        assert line in out, out


# The core: unlinking f in c1 makes "view c1:f exists" fail.  Everything else is noise: an
# extra layer, extra entries (one of them big), two more containers, steps that change other
# files, and expectations that hold.
NOISY = """\
scenario: noisy
description: a failing scenario with its minimal core hidden among irrelevant parts
layers:
  - id: base
    entries:
      - {path: etc, type: dir}
      - {path: etc/hostname, content: "box\\n"}
      - {path: f, size: 4MiB, pattern: random, seed: 1}
      - {path: big, size: 8MiB, pattern: random, seed: 2}
      - {path: opt/tool, content: "tool", mode: "0755"}
  - id: app
    entries:
      - {path: app/main, content: "main"}
      - {path: app/conf, content: "conf"}
containers:
  - {id: c1, image: app}
  - {id: c2, image: app}
  - {id: c3, image: base}
steps:
  - {op: write, in: c2, path: app/conf, data: "changed"}
  - {op: mkdir, in: c3, path: var}
  - {op: chmod, in: c1, path: opt/tool, mode: "0700"}
  - {op: unlink, in: c1, path: f}
  - {op: append, in: c2, path: etc/hostname, data: "x"}
expect:
  - view: {in: c2, path: app/conf, content: "changed"}
  - view: {in: c1, path: f, exists: true}
  - view: {in: c3, path: var, type: dir}
  - image_unchanged: true
"""

CORE = {
    "layers": [{"id": "base", "entries": [{"path": "f", "size": "0", "pattern": "random", "seed": "1"}]}],
    "containers": [{"id": "c1", "image": "base"}],
    "steps": [{"op": "unlink", "in": "c1", "path": "f"}],
    "expect": [{"view": {"in": "c1", "path": "f", "exists": "true"}}],
}


def test_reduce_finds_the_hidden_core(workdir):
    import yaml
    src = write_scenario(workdir, "noisy", NOISY)
    out = os.path.join(workdir, "reduced.yaml")
    p = cowlab("scenario", "reduce", src, "--driver", "vfs", "--work-dir", workdir, "-o", out, timeout=1800)
    assert p.returncode == 0, p.stderr
    assert 'kept failure "expect view c1:f exists' in p.stderr, p.stderr
    with open(out) as f:
        got = strings(yaml.safe_load(f))
    for key, want in CORE.items():
        assert got.get(key) == want, f"{key}: {got.get(key)}\nfull result:\n{open(out).read()}"
    # The reduced file is a valid scenario that still fails the same way.
    status, _ = cowlab_verdict(out, "vfs", workdir)
    assert status == "fail"


def test_reduce_refuses_a_passing_scenario(workdir):
    src = write_scenario(workdir, "passing", textwrap.dedent("""\
        scenario: passing
        description: nothing fails
        layers: [{id: base, entries: [{path: f, content: x}]}]
        containers: [{id: c1, image: base}]
        expect:
          - view: {in: c1, path: f, content: x}
        """))
    p = cowlab("scenario", "reduce", src, "--driver", "vfs", "--work-dir", workdir, check=False)
    assert p.returncode == 1
    assert "does not fail on vfs (status pass)" in p.stderr, p.stderr


def test_reduce_profile_refuses_bad_input_before_any_guest(workdir):
    src = os.path.join(REPO, "scenarios/regression/ro-then-rw-open.yaml")
    p = cowlab("scenario", "reduce", src, "--driver", "overlay", "--profile", "no-such-profile", check=False)
    assert p.returncode == 1, p.stderr
    assert "scenario reduce --profile: profile 'no-such-profile': unknown (known: " in p.stderr, p.stderr
    assert "debian-6.1" in p.stderr, p.stderr
    p = cowlab("scenario", "reduce", src, "--driver", "overlay", "--profile", "debian-6.1",
               "--work-dir", workdir, check=False)
    assert p.returncode == 2 and "--work-dir is for host runs" in p.stderr, p.stderr
    broken = write_scenario(workdir, "broken", "scenario: broken\ndescription: x\nlayers: []\nbogus: 1\n")
    p = cowlab("scenario", "reduce", broken, "--driver", "overlay", "--profile", "debian-6.1", check=False)
    assert p.returncode == 1 and "broken.yaml:4:1:" in p.stderr, p.stderr


KERNEL_CASES = """\
scenario: kernel-cases
description: an expectation that the running kernel decides
requires: {kernel: ">=3.0"}
layers: [{id: base, entries: [{path: f, content: "x"}]}]
containers: [{id: c1, image: base}]
steps:
  - {op: unlink, in: c1, path: f}
expect:
  - view: {in: c1, path: f, exists: false}
    cases:
      - when: {kernel: "<5.0"}
        exists: true
"""


@pytest.mark.parametrize("driver", ["overlay", "btrfs"])
def test_exported_script_decides_cases_on_the_kernel_it_runs_on(driver, workdir):
    # The script is exported once, here; a uname(1) in PATH makes it see other kernels.  It
    # must take the `cases:` branch and `requires:` verdict of the kernel it runs on, not of
    # the machine that exported it.
    path = write_scenario(workdir, "kernel-cases", KERNEL_CASES)
    script = os.path.join(workdir, "repro.sh")
    p = cowlab("scenario", "export", path, "--driver", driver, "-o", script)
    assert p.returncode == 0, p.stderr
    fake = os.path.join(workdir, "fakebin")
    os.mkdir(fake)

    def run_as(release):
        with open(os.path.join(fake, "uname"), "w") as f:
            f.write(f"#!/bin/sh\necho {release}\n")
        os.chmod(os.path.join(fake, "uname"), 0o755)
        env = dict(os.environ, COWLAB_EXPORT_DIR=workdir, PATH=fake + ":" + os.environ["PATH"])
        return subprocess.run(["/bin/sh", script], capture_output=True, text=True, timeout=600, env=env)

    here = run_as(os.uname().release)  # the default branch: the file is gone
    assert here.returncode == 0, here.stdout + here.stderr
    old = run_as("4.19.0-27-amd64")  # case 1: expects the file, so this check fails
    assert old.returncode == 1, old.stdout + old.stderr
    assert "case expect 1 view: case 1" in old.stdout, old.stdout
    assert "FAIL expect 1 view c1:f exists: expected true, observed false" in old.stdout, old.stdout
    ancient = run_as("2.6.32-5-amd64")  # requires >=3.0: does not apply
    assert ancient.returncode == 3, ancient.stdout + ancient.stderr
    assert "kernel-cases: skip: needs kernel >=3.0 (2.6.32-5-amd64)" in ancient.stdout, ancient.stdout


def test_export_refuses_a_driver_the_scenario_does_not_apply_to(workdir):
    path = write_scenario(workdir, "overlay-only",
                          KERNEL_CASES.replace('requires: {kernel: ">=3.0"}', "requires: {drivers: [overlay]}"))
    p = cowlab("scenario", "export", path, "--driver", "btrfs", check=False)
    assert p.returncode == 1 and "kernel-cases does not apply to btrfs" in p.stderr, p.stderr


# A difference between two host drivers (issue 13): on overlay (index=off, as Docker) a write
# through one name of a lower hard link copies up only that name, so the other name keeps the
# old content; on vfs both names are one inode.  The core is that hard link, the write and the
# check of the other name; everything else — another layer, entries, containers, steps and
# expectations that hold on both drivers, and a check that fails on both (no difference) —
# must go.
DIFFERING = """\
scenario: differing
description: a difference between overlay and vfs hidden among irrelevant parts
layers:
  - id: base
    entries:
      - {path: etc/hostname, content: "box\\n"}
      - {path: bin/busybox, content: "v1"}
      - {path: bin/sh, type: hardlink, target: bin/busybox}
      - {path: big, size: 2MiB, pattern: random, seed: 2}
      - {path: opt/tool, content: "tool", mode: "0755"}
  - id: app
    entries:
      - {path: app/main, content: "main"}
containers:
  - {id: c1, image: app}
  - {id: c2, image: app}
steps:
  - {op: write, in: c2, path: app/main, data: "changed"}
  - {op: chmod, in: c1, path: opt/tool, mode: "0700"}
  - {op: write, in: c1, path: bin/busybox, data: "v2"}
  - {op: append, in: c1, path: etc/hostname, data: "x"}
expect:
  - view: {in: c2, path: app/main, content: "changed"}
  - view: {in: c1, path: opt/tool, content: "wrong on both drivers"}
  - view: {in: c1, path: bin/sh, content: "v2"}
  - view: {in: c1, path: opt/tool, mode: "0700"}
"""

DIFF_CORE = {
    "layers": [{"id": "base", "entries": [{"path": "bin/busybox", "content": "v1"},
                                          {"path": "bin/sh", "type": "hardlink", "target": "bin/busybox"}]}],
    "containers": [{"id": "c1", "image": "base"}],
    "steps": [{"op": "write", "in": "c1", "path": "bin/busybox", "data": "v2"}],
    "expect": [{"view": {"in": "c1", "path": "bin/sh", "content": "v2"}}],
}


@pytest.mark.parametrize("sides", [("overlay", "vfs"), ("vfs", "overlay")])
def test_reduce_finds_the_core_of_a_difference_between_drivers(sides, workdir):
    import yaml
    this, other = sides
    src = write_scenario(workdir, "differing", DIFFERING)
    out = os.path.join(workdir, "reduced.yaml")
    p = cowlab("scenario", "reduce", src, "--driver", this, "--against-driver", other,
               "--work-dir", workdir, "-o", out, timeout=1800)
    assert p.returncode == 0, p.stderr
    # The check that fails on both drivers is no difference: the target is the hard link's.
    assert ('kept difference "expect view c1:bin/sh content" (fails on overlay, passes on vfs)'
            in p.stderr), p.stderr
    with open(out) as f:
        text = f.read()
    got = strings(yaml.safe_load(text))
    for key, want in DIFF_CORE.items():
        assert got.get(key) == want, f"{key}: {got.get(key)}\nfull result:\n{text}"
    # The reduced file still differs the same way.
    assert cowlab_verdict(out, "overlay", workdir)[0] == "fail"
    assert cowlab_verdict(out, "vfs", workdir)[0] == "pass"


def test_reduce_refuses_what_does_not_differ(workdir):
    src = write_scenario(workdir, "same", textwrap.dedent("""\
        scenario: same
        description: fails the same way on both drivers
        layers: [{id: base, entries: [{path: f, content: x}]}]
        containers: [{id: c1, image: base}]
        expect:
          - view: {in: c1, path: f, content: y}
        """))
    p = cowlab("scenario", "reduce", src, "--driver", "overlay", "--against-driver", "vfs",
               "--work-dir", workdir, check=False)
    assert p.returncode == 1, p.stderr
    assert "does not differ between overlay (status fail, 1 failed check(s), first " in p.stderr, p.stderr
    assert "only a check that fails on one side and passes on the other can be reduced" in p.stderr


@pytest.mark.parametrize("args,message", [
    (["--driver", "overlay", "--against-driver", "vfs", "--profile", "debian-6.1",
      "--against-profile", "debian-trixie-backports"],
     "--against-driver and --against-profile together"),
    (["--driver", "overlay", "--against-profile", "debian-6.1"],
     "--against-profile debian-6.1 needs --profile"),
    (["--driver", "overlay", "--against-driver", "overlay"],
     "--against-driver overlay is --driver itself"),
    (["--driver", "overlay", "--profile", "debian-6.1", "--against-profile", "debian-6.1"],
     "--against-profile debian-6.1 is --profile itself"),
    (["--driver", "overlay", "--against-driver", "nosuch"],
     "unknown driver \"nosuch\" (--against-driver)"),
])
def test_reduce_refuses_a_bad_combination_of_sides(args, message, workdir):
    src = os.path.join(REPO, "scenarios/regression/copy-up-breaks-hardlink.yaml")
    before = set(os.listdir("/var/tmp"))
    p = cowlab("scenario", "reduce", src, *args, check=False)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr, p.stderr
    assert not [d for d in set(os.listdir("/var/tmp")) - before if d.startswith("cowlab-reduce-")]
