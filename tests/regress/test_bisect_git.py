"""The synthetic git bisection (issue 10; `make test-bisect`, too long for `make test`: it
builds a kernel): a history made from Debian's linux-source-6.1 (tests/regress/make_history.sh)
where one commit makes overlay's copy-up drop a file's mode and one earlier commit does not
compile.  `cowlab bisect` must name exactly the culprit, skip the broken commit, confirm the
culprit against its parent and write the log, the steps and a reproducer."""
import json
import os
import shutil
import subprocess

import pytest

COWLAB = os.environ.get("COWLAB_BIN", "cowlab")
HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.environ.get("COWLAB_CACHE", os.path.expanduser("~/.cache/cowlab")), "regress")


def test_git_bisect_names_the_culprit_and_skips_the_broken_commit(tmp_path):
    hist = os.path.join(CACHE, "linux-history")
    made = subprocess.run([os.path.join(HERE, "make_history.sh"), hist], capture_output=True, text=True, timeout=3600)
    assert made.returncode == 0, made.stderr[-3000:]
    good, culprit, broken = made.stdout.split()[-3:]
    out = tmp_path / "bisect"
    # Every step is `cowlab kernel build`'s default kernel (tinyconfig + cowlab's harness and
    # storage fragments) built in one work tree kept in the cache, so each step is incremental.
    p = subprocess.run([COWLAB, "bisect", "--source", hist, "--good", "synthetic-good", "--bad", "synthetic-bad",
                        "--scenario", os.path.join(HERE, "scenarios", "copy-up-keeps-mode.yaml"),
                        "--driver", "overlay", "--repeat", "2", "--out", str(out),
                        "--work-dir", os.path.join(CACHE, "bisect-work")],
                       capture_output=True, text=True, timeout=4 * 3600)
    print(p.stdout)
    print(p.stderr[-6000:])
    assert p.returncode == 0, p.stderr[-4000:]
    check_bisection(out, p.stdout, good, culprit, broken)
    steps = json.load(open(out / "steps.json"))
    # The checker catches a wrong answer: the same real bisection checked against another
    # commit as the culprit (its parent, and the broken commit), or with the broken commit
    # blamed instead of skipped, must fail.
    parent = subprocess.run(["git", "-C", hist, "rev-parse", culprit + "^"], capture_output=True, text=True,
                            check=True).stdout.strip()
    for wrong in (parent, broken):
        with pytest.raises(AssertionError):
            check_bisection(out, p.stdout, good, wrong, broken)
    blamed = tmp_path / "blamed"
    shutil.copytree(out, blamed)
    doc = json.load(open(blamed / "steps.json"))
    for st in doc["steps"]:
        if st["point"] == broken:
            st["verdict"], st["reason"] = "new", ""
    json.dump(doc, open(blamed / "steps.json", "w"))
    with pytest.raises(AssertionError):
        check_bisection(blamed, p.stdout, good, culprit, broken)
    print(f"bisection: {steps['wall_seconds']:.0f} s wall, build {steps['build_seconds']:.0f} s, "
          f"run {steps['run_seconds']:.0f} s, {len(steps['steps'])} steps")


def check_bisection(out, stdout, good, culprit, broken):
    """What a correct bisection of the synthetic history leaves in OUT (raises AssertionError)."""
    steps = json.load(open(out / "steps.json"))
    assert steps["first_new"] == culprit
    assert steps["subject"] == "c9: overlayfs: copy-up sets regular files to 0644"
    assert steps["old_status"] == "pass" and steps["new_status"] == "fail"
    assert steps["confirmed"] is True
    by_point = {}
    for s in steps["steps"]:
        by_point.setdefault(s["point"], []).append(s)
    assert broken in by_point and good in by_point, "the broken commit and the good end were tried"
    assert by_point[broken][0]["verdict"] == "skip" and by_point[broken][0]["reason"].startswith("does not build")
    assert by_point[good][0]["verdict"] == "old" and by_point[good][0]["reason"] == ""
    assert by_point[culprit][0]["verdict"] == "new" and "expected 0755, observed 0644" in by_point[culprit][0]["reason"]
    # Each step's own record agrees with the summary (the ends are judged once both are known).
    for st in steps["steps"][:2]:
        own = json.load(open(os.path.join(st["dir"], "step.json")))
        assert own["verdict"] == st["verdict"] and own["reason"] == st["reason"], (own, st)
    assert f"first bad commit: {culprit}" in stdout
    log = open(out / "bisect.log").read()
    assert f"git bisect skip {broken}" in log and f"# first bad commit: [{culprit}]" in log
    bundle = out / "reproducer"
    assert (bundle / "copy-up-keeps-mode.yaml").exists()
    assert json.load(open(bundle / "culprit.json"))["first_new"] == culprit
    assert os.access(bundle / "rerun.sh", os.X_OK)
