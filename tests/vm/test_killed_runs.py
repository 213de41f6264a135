"""A `cowlab scenario run` whose worker is killed with its store open — at the scenario's
timeout, or by a signal (SIGTERM; Ctrl-C's SIGINT takes the same path) — leaves nothing in
the guest's kernel: no device-mapper device, loop device, zfs pool or mount, and nothing
under the work dir; the next run on the driver passes.

A devicemapper worker killed that way used to leave the store's thin pool, its thin devices,
their two loop devices and the loop device of the filesystem under them, for the rest of the
guest's life (and under a name the next store whose home got that inode would take as its own).
"""
import base64
import json
import os
import tempfile

from conftest import HERE, vm_run

DRIVERS = ["devicemapper", "zfs", "btrfs"]

# One file in one layer, one container on it: the long run's lookups go on past its timeout
# (the kill comes first), the short one reads the file back.
IMAGE = 'layers: [{id: base, entries: [{path: f, content: "x"}]}]\ncontainers: [{id: c1, image: base}]\n'
LOOKUP = "  - {op: lookup, in: c1, path: missing, repeat: 10000000, distinct: true}\n"
LONG = ("scenario: long-lookups\ndescription: lookups that go on until the run is killed\ntimeout: 30\n"
        + IMAGE + "steps:\n" + LOOKUP * 2)
SHORT = ("scenario: short\ndescription: one file through one container\n"
         + IMAGE + 'expect:\n  - view: {in: c1, path: f, content: "x"}\n')

# What each driver's store holds in the kernel while it runs: the signalled run's "before"
# must show it, or the kill came too early to test anything.
HELD_WHILE_RUNNING = {"devicemapper": "dm ", "zfs": "zpool ", "btrfs": "mount "}


def _text(b64):
    return base64.b64decode(b64).decode(errors="replace")


def test_a_killed_run_leaves_nothing_in_the_kernel(profile):
    with tempfile.TemporaryDirectory() as d:
        sdir = os.path.join(d, "scenarios")
        os.mkdir(sdir)
        for name, text in (("long", LONG), ("short", SHORT)):
            with open(os.path.join(sdir, name + ".yaml"), "w") as f:
                f.write(text)
        r = vm_run(profile, "--with-cowlab", "--disk", "8G", "--memory", "1536", "--timeout", "1200",
                   "--payload", f"{sdir}:scenarios", "--payload", os.path.join(HERE, "killed_runs.sh"),
                   cmd=["sh", "killed_runs.sh", *DRIVERS], timeout=1800)
    assert r.rc == 0, r
    rows = [json.loads(line) for line in r.result["records"]]
    assert [(x["driver"], x["how"]) for x in rows] == [(d, h) for d in DRIVERS for h in ("timeout", "signal")], rows
    for row in rows:
        where = f"{row['driver']} killed at its {row['how']}"
        err = _text(row["stderr_b64"])
        if row["how"] == "timeout":
            assert row["status"] == "timeout" and row["rc"] == 1, f"{where}: {row['status']} rc {row['rc']}\n{err}"
        else:
            assert row["rc"] == 143 and "interrupted" in err, f"{where}: rc {row['rc']}\n{err}"
            before = _text(row["before_b64"])
            assert HELD_WHILE_RUNNING[row["driver"]] in before, f"{where}: killed before its store was up:\n{before}"
        after = _text(row["after_b64"])
        assert after == "", f"{where}: left behind:\n{after}\ncowlab:\n{err}"
        assert row["next"] == "pass" and row["next_rc"] == 0, \
            f"{where}: the next run: {row['next']} rc {row['next_rc']}\n{_text(row['next_stderr_b64'])}"
