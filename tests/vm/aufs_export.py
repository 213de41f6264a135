"""`cowlab scenario export --driver aufs` on a real aufs kernel (issue 13).

The scripts exported on the host for the aufs-relevant scenarios (every basic, regression and
whiteout scenario that exports, plus one broken on purpose) run in a guest of the
bring-your-own profile `aufs` (an aufs kernel built with `cowlab kernel build`, docs/aufs.md)
with nothing of cowlab in PATH, next to `cowlab scenario run --driver aufs` on the same kernel
(tests/vm/export_compare.sh does both in the guest); their verdicts must agree.  The first run
of this comparison found five scripts that disagreed: a 126-layer union whose options did not
fit one page (mount(2) copies one page: the script now appends the rest with
`remount,append:`, as cowlab's driver does), and four faults of every driver's script (an
unevaluated `same_inode_as`, an own-layer whiteout, an empty file, a 1 GiB perl read).

Run by ctest as vm-aufs-export (not collected by a plain `pytest tests/vm`: the name does not
start with test_).  Without a built `aufs` profile (or COWLAB_AUFS_KERNEL to build it from) it
is skipped with that reason.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

from conftest import COWLAB, FIXTURES, HERE, aufs_kernel_args, build_aufs_profile, built_aufs_profile, vm_run

REPO = os.path.dirname(os.path.dirname(HERE))
GROUPS = ("basic", "regression", "whiteout")
NO_AUFS = "skipped: no aufs profile built (cowlab kernel build --profile aufs ..., or set COWLAB_AUFS_KERNEL; docs/aufs.md)"


def broken_on_purpose():
    """tests/fixtures/broken-on-purpose.yaml without its RENAME_NOREPLACE step."""
    with open(os.path.join(FIXTURES, "broken-on-purpose.yaml")) as f:
        scenario = yaml.safe_load(f)
    scenario["steps"] = [s for s in scenario["steps"] if s["op"] != "rename"]
    return yaml.safe_dump(scenario, sort_keys=False)


def aufs_profile():
    """The aufs profile's entry, building it first from COWLAB_AUFS_KERNEL when that is set;
    None when there is none."""
    args = aufs_kernel_args()
    if args:
        build_aufs_profile(args)
    return built_aufs_profile()


def test_aufs_exported_scripts_agree_with_cowlab():
    entry = aufs_profile()
    if entry is None:
        print(NO_AUFS)
        pytest.skip(NO_AUFS)
    with tempfile.TemporaryDirectory() as d:
        sdir, xdir = os.path.join(d, "scenarios"), os.path.join(d, "scripts")
        os.mkdir(sdir)
        os.mkdir(xdir)
        with open(os.path.join(sdir, "broken-on-purpose.yaml"), "w") as f:
            f.write(broken_on_purpose())
        # Every scenario of the groups that exports for aufs: one that needs cowlab (a step
        # such as mmap, a tar layer) or does not apply to aufs is refused by export, not here.
        refused = {}
        for group in GROUPS:
            for name in sorted(os.listdir(os.path.join(REPO, "scenarios", group))):
                if name.endswith(".yaml"):
                    shutil.copy(os.path.join(REPO, "scenarios", group, name), sdir)
        for name in sorted(os.listdir(sdir)):
            out = os.path.join(xdir, f"{name[:-5]}.aufs.sh")
            p = subprocess.run([COWLAB, "scenario", "export", os.path.join(sdir, name), "--driver", "aufs",
                                "--format", "sh", "-o", out], capture_output=True, text=True, timeout=120)
            if p.returncode != 0:
                refused[name] = p.stderr.strip()
                os.unlink(os.path.join(sdir, name))
        print(f"{len(os.listdir(sdir))} scripts; not exportable: {len(refused)}")
        for name, why in refused.items():
            print(f"  {name}: {why}")
        assert "aufs-branches-beyond-page.yaml" in os.listdir(sdir)
        r = vm_run("aufs", "--with-cowlab", "--disk", "8G", "--timeout", "5400",
                   "--payload", f"{sdir}:scenarios", "--payload", f"{xdir}:scripts",
                   "--payload", os.path.join(HERE, "export_compare.sh"),
                   cmd=["sh", "export_compare.sh", "aufs"], timeout=6000)
        count = len(os.listdir(sdir))
    assert r.rc == 0, r
    rows = [json.loads(line) for line in r.result["records"]]
    assert len(rows) == count, rows
    release = entry.get("kernel_release", "?")
    disagree = []
    for row in rows:
        out = base64.b64decode(row["output_b64"]).decode(errors="replace")
        log = base64.b64decode(row["cowlab_stderr_b64"]).decode(errors="replace")
        where = f"{row['scenario']} on aufs ({release})"
        want = {"pass": 0, "fail": 1, "skip": 3}.get(row["cowlab"])
        assert want is not None, f"{where}: cowlab's status {row['cowlab']}:\n{log}"
        print(f"{row['scenario']}: cowlab {row['cowlab']}, script exit {row['script_rc']}")
        if row["script_rc"] != want:
            disagree.append(f"{where}: cowlab says {row['cowlab']}, the script exited {row['script_rc']}:\n"
                            f"{out[-3000:]}\ncowlab:\n{log[-2000:]}")
        elif want != 3:
            assert "ok   " in out, f"{where}: the script checked nothing:\n{out}"
        if row["scenario"] == "broken-on-purpose":
            assert row["cowlab"] == "fail", log
            assert "FAIL expect 1 view c1:etc/motd exists" in out, out
            assert "FAIL expect 2 view c1:bin/a nlink" in out, out
    # Every script left nothing behind; the count is cumulative over the run.
    assert rows[-1]["left_behind"] == 0, "a script left its directory behind"
    print(f"{len(rows)} scripts, {len(rows) - len(disagree)} verdicts agree", file=sys.stderr)
    assert not disagree, "\n\n".join(disagree)
