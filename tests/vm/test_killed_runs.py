"""A `cowlab scenario run` whose worker is killed with its store open — at the scenario's
timeout, or by a signal (SIGTERM; Ctrl-C's SIGINT takes the same path) — leaves nothing in
the guest's kernel: no device-mapper device, loop device, zfs pool or mount, and nothing
under the work dir; the next run on the driver passes.  The same holds for a run that started
from an image checkpoint (`--repeat`): the timed-out case runs twice, the second time from the
checkpoint the first saved, and the next run on the driver runs three times, the last two from
its checkpoint, and must leave nothing either (the checkpoints under the work dir included).

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


def _records(b64):
    return [json.loads(line) for line in _text(b64).splitlines() if line.strip()]


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
        results = _records(row["results_b64"])
        if row["how"] == "timeout":
            # --repeat 2: the first run saved its image checkpoint before its steps ran into the
            # timeout, the second restored it and was killed at the timeout too.
            got = [(x["run"], x["status"], x["image"]["source"], x["image"]["checkpoint"]) for x in results]
            assert got == [(1, "timeout", "import", ""), (2, "timeout", "checkpoint", "")], \
                f"{where}: {got} rc {row['rc']}\n{err}"
            assert row["rc"] == 1, f"{where}: rc {row['rc']}\n{err}"
        else:
            assert row["rc"] == 143 and "interrupted" in err, f"{where}: rc {row['rc']}\n{err}"
            before = _text(row["before_b64"])
            assert HELD_WHILE_RUNNING[row["driver"]] in before, f"{where}: killed before its store was up:\n{before}"
        after = _text(row["after_b64"])
        assert after == "", f"{where}: left behind:\n{after}\ncowlab:\n{err}"
        # killed_runs.sh gives the stores an ext4 scratch, which does not clone files: the zfs
        # pool too is exported for its checkpoint ("released").  The live checkpoint a scratch
        # that clones allows is CheckpointTest.ZfsPoolIsCheckpointedLive... (vm-zfs-suites).
        nexts = [(x["run"], x["status"], x["image"]["source"], x["image"]["checkpoint"], x["image"]["quiesce"])
                 for x in _records(row["next_b64"])]
        assert nexts == [(1, "pass", "import", "saved", "released"), (2, "pass", "checkpoint", "", ""),
                         (3, "pass", "checkpoint", "", "")] and row["next_rc"] == 0, \
            f"{where}: the next runs: {nexts} rc {row['next_rc']}\n{_text(row['next_stderr_b64'])}"
        next_after = _text(row["next_after_b64"])
        assert next_after == "", f"{where}: the next runs left behind:\n{next_after}"
