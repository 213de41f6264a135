"""Host tests of issue 10: repeats and reruns in `cowlab scenario run` (the runner the guests
use), and `cowlab matrix compare` through the CLI on hand-built result directories."""
import glob
import html
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "host"))
import browser  # noqa: E402  (headless Chromium, shared with report.html's tests)
import coin  # noqa: E402

COWLAB = os.environ.get("COWLAB_BIN", "cowlab")
HERE = os.path.dirname(os.path.abspath(__file__))
MUST_FAIL = os.path.join(HERE, "..", "matrix", "scenarios", "must-fail.yaml")


def run(*args, timeout=600):
    return subprocess.run([COWLAB, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def lines(p):
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def test_repeat_runs_each_time_on_a_fresh_store_and_follows_the_coin(tmp_path):
    scen = tmp_path / "coin.yaml"
    heads = coin.write_scenario(scen, 6)
    assert any(heads) and not all(heads), "the seed must give mixed outcomes"
    p = run("scenario", "run", "--driver", "vfs", "--work-dir", tmp_path, "--repeat", 6, scen)
    rs = lines(p)
    assert [r["run"] for r in rs] == [1, 2, 3, 4, 5, 6], p.stderr[-2000:]
    assert [r["status"] for r in rs] == ["pass" if h else "fail" for h in heads]
    # The first run imports the image and saves the store as the import left it; the later ones
    # each start from a copy of that checkpoint: a store of their own that no other run touched,
    # without importing the image again (issue 10's "must not repeat the image preparation").
    # vfs's store is quiesced by closing it ("released"); only a zfs pool is checkpointed live.
    assert [r["image"] for r in rs] == [{"source": "import", "checkpoint": "saved", "quiesce": "released"}] + \
        [{"source": "checkpoint", "checkpoint": "", "quiesce": ""}] * 5
    assert [r["layer_tars"] for r in rs] == [{"built": 1, "reused": 0}] + [{"built": 0, "reused": 0}] * 5
    assert {"backing", "open", "layers", "checkpoint", "containers", "expect", "finish",
            "teardown"} <= set(rs[0]["phases_s"]), rs[0]
    for r in rs[1:]:
        assert {"restore", "open", "containers", "expect", "finish", "teardown"} <= set(r["phases_s"]), r
        assert not {"backing", "layers"} & set(r["phases_s"]), r
    for r in rs:
        assert "digests" not in r["phases_s"], "no expectation compares a digest"
    for r in rs:
        if r["status"] == "fail":
            assert r["failures"][0]["expected"] == '"tails"' or "tails" in r["failures"][0]["expected"]
    # A cell with passing and failing runs is flaky: counted apart, not a failure of the
    # command (the matrix's rule, docs/regressions.md).
    assert p.returncode == 0 and "flaky cells=1" in p.stderr, p.stderr[-2000:]
    # Nothing left behind in the work dir: every run's store was torn down.
    assert [e for e in os.listdir(tmp_path) if e != "coin.yaml"] == []


def test_repeat_from_import_imports_the_image_on_every_run(tmp_path):
    scen = tmp_path / "coin.yaml"
    heads = coin.write_scenario(scen, 3)
    p = run("scenario", "run", "--driver", "vfs", "--work-dir", tmp_path, "--repeat", 3,
            "--repeat-from", "import", scen)
    rs = lines(p)
    assert [r["status"] for r in rs] == ["pass" if h else "fail" for h in heads], p.stderr[-2000:]
    assert [r["image"] for r in rs] == [{"source": "import", "checkpoint": "", "quiesce": ""}] * 3
    # The first run builds the layer's tar, the later ones import that same tar into their own
    # fresh store.
    assert [r["layer_tars"] for r in rs] == [{"built": 1, "reused": 0}] + [{"built": 0, "reused": 1}] * 2
    for r in rs:
        assert {"backing", "open", "layers"} <= set(r["phases_s"]) and "restore" not in r["phases_s"], r
    assert [e for e in os.listdir(tmp_path) if e != "coin.yaml"] == []


def test_rerun_failures_stops_at_the_first_pass(tmp_path):
    # A seed whose first two flips are tails and the third heads.
    seed = next(s for s in range(1000) if coin.flips(3, s) == [False, False, True])
    scen = tmp_path / "coin.yaml"
    coin.write_scenario(scen, 3, seed)
    p = run("scenario", "run", "--driver", "vfs", "--work-dir", tmp_path, "--rerun-failures", 5, scen)
    rs = lines(p)
    assert [(r["run"], r["status"], r.get("rerun", False)) for r in rs] == [
        (1, "fail", False), (2, "fail", True), (3, "pass", True)], p.stderr[-2000:]
    # Passed on its last rerun: flaky, exit 0 (it used to exit 1 for the failed runs, so a
    # rerun could never rescue a cell of `scenario run`).
    assert p.returncode == 0 and "flaky cells=1" in p.stderr, p.stderr[-2000:]


def test_rerun_failures_of_a_real_failure_runs_k_more_times(tmp_path):
    p = run("scenario", "run", "--driver", "vfs", "--work-dir", tmp_path, "--rerun-failures", 2, MUST_FAIL)
    rs = lines(p)
    assert [(r["run"], r["status"]) for r in rs] == [(1, "fail"), (2, "fail"), (3, "fail")]
    assert p.returncode == 1 and "flaky" not in p.stderr, p.stderr[-2000:]
    # A passing cell is never rerun.
    scen = tmp_path / "coin.yaml"
    coin.write_scenario(scen, 1, next(s for s in range(1000) if coin.flips(1, s) == [True]))
    p = run("scenario", "run", "--driver", "vfs", "--work-dir", tmp_path, "--rerun-failures", 2, scen)
    assert [(r["run"], r["status"]) for r in lines(p)] == [(1, "pass")]


def checkpoint_estimate(points, x):
    """scenario::CheckpointCosts::estimate: (save, restore) linear between the measured
    checkpoints (import, save, restore) that bracket x; None outside their range."""
    def interp(xy):
        xy = sorted(xy)
        if not xy or x < xy[0][0] or x > xy[-1][0]:
            return None
        if x == xy[0][0]:
            return xy[0][1]
        for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
            if x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
        return xy[-1][1]
    save = interp([(p[0], p[1]) for p in points])
    restores = [(p[0], p[2]) for p in points if p[2] is not None]
    restore = interp(restores) if restores else 0.0
    return None if save is None or restore is None else (save, restore)


def test_a_cell_saves_a_checkpoint_only_where_its_drivers_checkpoints_so_far_say_it_pays(tmp_path):
    # Images of 1 KiB, 256 MiB, 4 MiB and 1 KiB again on vfs, 3 runs each.  The first cell
    # saves a checkpoint (nothing measured yet); every later one decides from the checkpoints
    # the cells before it saved and restored, and a refusal says why with its numbers.
    names = []
    for i, size in enumerate(["1KiB", "256MiB", "4MiB", "1KiB"]):
        f = tmp_path / f"s{i}.yaml"
        f.write_text(f"""scenario: s{i}
description: a {size} image
layers:
  - id: base
    entries: [{{path: f, size: {size}}}]
containers: [{{id: c1, image: base}}]
expect:
  - view: {{in: c1, path: f, size: {size}}}
""")
        names.append(f)
    p = run("scenario", "run", "--driver", "vfs", "--work-dir", tmp_path, "--repeat", 3, *names)
    rs = lines(p)
    assert [(r["scenario"], r["run"], r["status"]) for r in rs] == \
        [(f"s{i}", n, "pass") for i in range(4) for n in (1, 2, 3)], p.stderr[-2000:]
    points = []
    for i in range(4):
        first, later = rs[3 * i], rs[3 * i + 1:3 * i + 3]
        imported = sum(first["phases_s"].get(k, 0) for k in ("backing", "layers", "digests"))
        est = checkpoint_estimate(points, imported)
        pays = est is None or 2 * (imported - est[1]) > est[0]
        got = first["image"]["checkpoint"]
        if i == 0:
            assert est is None and got == "saved", got
        if pays:
            assert got == "saved" and [r["image"]["source"] for r in later] == ["checkpoint"] * 2, (i, got)
            assert "checkpoint" in first["phases_s"]
            points.append((imported, first["phases_s"]["checkpoint"],
                           sum(r["phases_s"]["restore"] for r in later) / 2))
        else:
            assert got == (f"not saved: preparing the image took {imported:.2f} s; a checkpoint would save "
                           f"less than it costs over 2 later run(s) (saving one takes {est[0]:.2f} s, restoring "
                           f"one {est[1]:.2f} s, as estimated from this driver's {len(points)} checkpoint(s) "
                           f"so far)"), (i, got)
            assert "checkpoint" not in first["phases_s"] and [r["image"]["source"] for r in later] == ["import"] * 2
    assert [e for e in os.listdir(tmp_path) if not e.endswith(".yaml")] == []


def test_bad_repeat_values_are_usage_errors(tmp_path):
    for bad in ["0", "x", "-1"]:
        p = run("scenario", "run", "--driver", "vfs", "--repeat", bad, MUST_FAIL)
        assert p.returncode == 2 and "--repeat" in p.stderr, (bad, p.stderr)
    # Where the later runs get their image: only "checkpoint" or "import", on both commands.
    for cmd in (["scenario", "run", "--driver", "vfs"], ["matrix", "--profiles", "debian-6.1"]):
        p = run(*cmd, "--repeat-from", "copy", MUST_FAIL)
        assert p.returncode == 2 and "--repeat-from" in p.stderr and "copy" in p.stderr, (cmd, p.stderr)
    scen = tmp_path / "bad.yaml"
    scen.write_text(open(MUST_FAIL).read().replace('content: "goodbye"}', 'content: "goodbye"}\n    cases:\n      - when: {runs: [0]}\n        content: x'))
    p = run("scenario", "check", scen)
    assert p.returncode != 0 and "runs" in p.stderr and "bad.yaml" in p.stderr, p.stderr


# ---- matrix compare on hand-built result directories ------------------------------------------

def cell(scenario, status, driver="overlay", profile="p1", measurements=None, units=None, runs=None, failures=None):
    c = {"scenario": scenario, "driver": driver, "profile": profile, "kernel": "6.1.0-x", "status": status,
         "reason": "", "sweep": {}, "duration_s": 1.0, "measurements": measurements or {}, "units": units or {},
         "failures": failures or ([{"expectation": "expect 1 view c1:f mode", "expected": "0755",
                                    "observed": "0644"}] if status == "fail" else [])}
    if runs:
        c["runs"] = runs
    return c


def write_dir(d, cells, profiles=("p1",)):
    d.mkdir(parents=True, exist_ok=True)
    doc = {"command": "hand-built", "wall_seconds": 1, "drivers": ["overlay", "vfs"],
           "profiles": [{"name": p, "kernel_release": f"{p}-release", "manifest": "", "accel": "tcg"} for p in profiles],
           "results": cells}
    (d / "results.json").write_text(json.dumps(doc))
    return d


MIB = 1 << 20
SIZE = {"copy_up": "bytes"}


def test_compare_no_regression_exit_0_and_reports(tmp_path):
    base = write_dir(tmp_path / "base", [cell("a", "pass", measurements={"copy_up": 10 * MIB}, units=SIZE),
                                         cell("b", "fail")])
    new = write_dir(tmp_path / "new", [cell("a", "pass", measurements={"copy_up": 10.5 * MIB}, units=SIZE),
                                       cell("b", "pass")])
    p = run("matrix", "compare", base, new, "--out", tmp_path / "cmp")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "fixes (1)" in p.stdout and "verdict: no regression" in p.stdout
    doc = json.load(open(tmp_path / "cmp" / "compare.json"))
    assert doc["regressions"] == 0 and doc["cells"][0]["kind"] == "fix"
    assert '<section id="comparison">' in open(tmp_path / "cmp" / "compare.html").read()


def test_compare_regressions_exit_3_with_every_transition(tmp_path):
    flaky = {"total": 3, "pass": 2, "fail": 1}
    base = write_dir(tmp_path / "base", [
        cell("p2f", "pass"), cell("f2p", "fail"), cell("p2fl", "pass"), cell("fl2p", "flaky", runs=flaky),
        cell("f2fl", "fail"), cell("fl2f", "flaky", runs=flaky), cell("s2f", "skip"), cell("f2panic", "fail"),
        cell("to-skip", "pass"), cell("from-skip", "skip"), cell("gone", "pass"), cell("same", "pass"),
        cell("grow", "pass", measurements={"copy_up": 1 * MIB}, units=SIZE),
        cell("create-cost-vs-image-size", "pass", measurements={"create.c-small.space": 1 * MIB}, units={"create.c-small.space": "bytes"})])
    new = write_dir(tmp_path / "new", [
        cell("p2f", "fail"), cell("f2p", "pass"), cell("p2fl", "flaky", runs=flaky), cell("fl2p", "pass"),
        cell("f2fl", "flaky", runs=flaky), cell("fl2f", "fail"), cell("s2f", "fail"), cell("f2panic", "panic"),
        cell("to-skip", "skip"), cell("from-skip", "pass"), cell("new", "pass"), cell("newfail", "error"),
        cell("same", "pass"), cell("grow", "pass", measurements={"copy_up": 2 * MIB}, units=SIZE),
        cell("create-cost-vs-image-size", "pass", measurements={"create.c-small.space": 1 * MIB}, units={"create.c-small.space": "bytes"})])
    p = run("matrix", "compare", base, new, "--out", tmp_path / "cmp")
    assert p.returncode == 3, p.stdout + p.stderr
    doc = json.load(open(tmp_path / "cmp" / "compare.json"))
    kinds = {c["scenario"]: c["kind"] for c in doc["cells"]}
    assert kinds == {"p2f": "regression", "f2p": "fix", "p2fl": "became-flaky", "fl2p": "no-longer-flaky",
                     "f2fl": "partial-fix", "fl2f": "regression", "s2f": "regression", "f2panic": "regression",
                     "to-skip": "now-skipped", "from-skip": "no-longer-skipped", "gone": "disappeared",
                     "new": "appeared", "newfail": "regression"}
    assert [(m["scenario"], m["kind"]) for m in doc["measurements"]] == [("grow", "worse")]
    assert doc["regressions"] == 6
    assert "REGRESSIONS (5)" in p.stdout and "WORSE" in p.stdout and "1.00 MiB -> 2.00 MiB" in p.stdout
    # The flaky cell is never a regression.
    assert not [c for c in doc["cells"] if c["scenario"] == "p2fl" and c["regression"]]
    html = open(tmp_path / "cmp" / "compare.html").read()
    # report.html's charts, both sides drawn together.
    assert "<svg" in html and "overlay · base" in html and "overlay · new" in html
    # A tolerance override turns the size change into no regression.
    p = run("matrix", "compare", base, new, "--tolerance", "copy_up=150%")
    assert "WORSE" not in p.stdout


# compare.html is built with report.html's HTML builder (issue 14): in a real browser, a
# scenario name full of markup is text in its row, no chart label or caption is clipped, and
# there is no "Measured curves" heading over nothing.
def test_compare_html_in_a_browser(tmp_path):
    name = "odd<b>&'\"name</b>"

    def curves():
        cs = []
        for d in ("overlay", "vfs"):
            for size, b in (("1MiB", MIB), ("64MiB", 64 * MIB)):
                c = cell("copy-up-file-level", "pass", driver=d, measurements={"copy_up": b}, units=SIZE)
                c["sweep"] = {"size": size}
                cs.append(c)
        return cs
    base = write_dir(tmp_path / "base", [cell(name, "pass"), *curves()])
    new = write_dir(tmp_path / "new", [cell(name, "fail"), *curves()])
    p = run("matrix", "compare", base, new, "--out", tmp_path / "cmp")
    assert p.returncode == 3, p.stdout + p.stderr
    dom, shot = browser.render(tmp_path / "cmp" / "compare.html", tmp_path, "compare")
    assert browser.clipped(dom) == []
    width, height = browser.png_size(shot)
    assert (width, height) == (1280, 1600) and os.path.getsize(shot) > 20000  # a page was drawn, not blank
    assert re.findall(r"<h2>([^<]*)</h2>", dom) == [
        "Cells that changed", "Measurements beyond tolerance", "Measured curves, both sides"]
    row = re.search(r'<tr class="regression">(.*?)</tr>', dom, re.S)
    assert row, dom
    tds = [html.unescape(td) for td in re.findall(r"<td>(.*?)</td>", row.group(1), re.S)]
    assert tds[:5] == ["regression", "overlay", name, "pass", "fail"], tds
    assert "overlay · base" in dom and "vfs · new" in dom  # both sides charted
    # Nothing to chart: no heading for it.
    plain = run("matrix", "compare", write_dir(tmp_path / "b2", [cell("x", "pass")]),
                write_dir(tmp_path / "n2", [cell("x", "fail")]), "--out", tmp_path / "cmp2")
    assert plain.returncode == 3, plain.stdout + plain.stderr
    dom, _ = browser.render(tmp_path / "cmp2" / "compare.html", tmp_path, "compare2")
    assert re.findall(r"<h2>([^<]*)</h2>", dom) == ["Cells that changed", "Measurements beyond tolerance"]


def test_compare_profiles_of_one_matrix(tmp_path):
    both = write_dir(tmp_path / "both", [cell("x", "pass", profile="k1"), cell("x", "fail", profile="k2"),
                                         cell("y", "pass", profile="k1"), cell("y", "pass", profile="k2")],
                     profiles=("k1", "k2"))
    p = run("matrix", "compare", both, "--profiles", "k1,k2", "--out", tmp_path / "cmp")
    assert p.returncode == 3, p.stdout + p.stderr
    assert "k1 (k1-release)" in p.stdout and "k2 (k2-release)" in p.stdout
    doc = json.load(open(tmp_path / "cmp" / "compare.json"))
    assert [(c["scenario"], c["kind"], c["profile_base"], c["profile_new"]) for c in doc["cells"]] == [
        ("x", "regression", "k1", "k2")]
    p = run("matrix", "compare", both, "--profiles", "k2,k1")
    assert p.returncode == 0 and "fixes (1)" in p.stdout


def test_compare_bad_input(tmp_path):
    base = write_dir(tmp_path / "base", [cell("a", "pass")])
    for args, code, words in [
        ([base], 2, "--profiles"),
        ([base, base, "--tolerance", "copy_up"], 2, "NAME=T"),
        ([base, base, "--tolerance", "copy_up=10"], 2, '"10"'),
        ([base, base, "--profiles", "p1"], 2, "two profile names"),
        ([base, base, "--profiles", "p1,nope"], 2, '"nope"'),
        ([base, tmp_path / "missing"], 1, "missing"),
    ]:
        out = tmp_path / "never"
        p = run("matrix", "compare", *args, "--out", out)
        assert p.returncode == code, (args, p.returncode, p.stderr)
        assert words in p.stderr, (args, p.stderr)
        assert not out.exists()  # no partial state
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "results.json").write_text("{not json")
    p = run("matrix", "compare", base, tmp_path / "junk")
    assert p.returncode == 1 and "junk" in p.stderr and "not a cowlab matrix result" in p.stderr


def fake_kernel_git_tree(path):
    """A git tree that resolve_kernel_source accepts (Makefile with a version, Kconfig, arch/x86)
    but whose Makefile cannot configure anything: every bisect step fails to build, in seconds."""
    (path / "arch" / "x86").mkdir(parents=True)
    (path / "arch" / "x86" / "Kconfig").write_text("")
    # Every option cowlab's default fragments ask for is declared, so the build gets to make.
    symbols = set()
    for frag in glob.glob(os.path.join(HERE, "..", "..", "vm-images", "kconfig", "*.config")):
        symbols |= set(re.findall(r"CONFIG_(\w+)", open(frag).read()))
    (path / "Kconfig").write_text("".join(f'config {s}\n\tbool "{s}"\n' for s in sorted(symbols)))
    (path / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 0\n"
                                   "%:\n\t@echo 'fake kernel: cannot make $@' >&2; exit 2\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@cowlab.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@cowlab.invalid")
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "base"],
                ["commit", "-q", "--allow-empty", "-m", "next"]):
        subprocess.run(["git", "-C", path, *cmd], check=True, env=env, capture_output=True)


def test_git_bisect_builds_each_step_with_cowlab_kernel_build(tmp_path):
    # A git bisection builds every step with build_kernel() (cowlab kernel build): no --config
    # needed (tinyconfig + cowlab's fragments), the work tree and the kept make log are in the
    # cache, and the user's tree is never configured or built in.  An end that does not build
    # gives no definite outcome: a usage error naming it and the build's own failure.
    tree = tmp_path / "linux"
    fake_kernel_git_tree(tree)
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    p = subprocess.run([COWLAB, "bisect", "--source", tree, "--good", "HEAD~1", "--bad", "HEAD",
                        "--scenario", os.path.join(HERE, "scenarios", "copy-up-keeps-mode.yaml"),
                        "--driver", "overlay", "--repeat", "1", "--out", out],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, COWLAB_CACHE=str(cache)))
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    assert "--good (" in p.stderr and "gives no definite outcome: does not build" in p.stderr, p.stderr
    assert "make tinyconfig failed (log " + str(cache / "kernel" / "logs") in p.stderr, p.stderr
    logs = list((cache / "kernel" / "logs").glob("config-*.log"))
    assert logs and "fake kernel: cannot make tinyconfig" in logs[0].read_text()
    assert list((cache / "kernel" / "work").glob("*/o-*")), "the build directory is in the work tree"
    status = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--ignored"],
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"the source tree was written to: {status}"
    step = json.load(open(next((out / "steps").glob("01-*")) / "step.json"))
    assert step["verdict"] == "skip" and step["reason"].startswith("does not build")


def _under(path):
    """Mounts and loop devices that involve `path`, and processes whose command line names it."""
    path = os.path.realpath(str(path))
    with open("/proc/self/mountinfo") as f:
        mounts = [l.split()[4] for l in f if l.split()[4].startswith(path + "/")]
    loops = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True,
                           text=True).stdout
    loops = [l for l in loops.splitlines() if path + "/" in l]
    procs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if path.encode() in f.read():
                        procs.append(int(pid))
            except OSError:
                pass
    return mounts, loops, procs


def test_interrupt_stops_the_worker_and_tears_the_store_down(tmp_path):
    # A run that takes long enough to be interrupted in its steps, with a second run and a
    # second scenario that must not start.
    scen = tmp_path / "scn" / "long.yaml"
    scen.parent.mkdir()
    scen.write_text("""scenario: long-lookups
description: many lookups, long enough to be interrupted
layers:
  - id: base
    entries:
      - {path: f, content: "x"}
containers: [{id: c1, image: base}]
steps:
  - {op: lookup, in: c1, path: missing, repeat: 10000000, distinct: true}
""")
    work = tmp_path / "work"
    p = subprocess.Popen([COWLAB, "scenario", "run", "--driver", "vfs", "--work-dir", str(work), "--repeat", "2",
                          str(scen), str(scen)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _under(work)[0]:
        assert p.poll() is None, p.communicate()
        time.sleep(0.1)
    assert _under(work)[0], "the run never mounted its store"
    time.sleep(2)  # into the steps
    assert p.poll() is None, "the run ended before it could be interrupted: make it longer"
    # What a terminal's Ctrl-C does: SIGINT to cowlab's process group (not the worker's).
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err[-2000:])
    assert "interrupted" in err, err[-2000:]
    assert out.strip() == "", "an interrupted run is not a result"
    mounts, loops, procs = _under(work)
    assert (mounts, loops, procs) == ([], [], []), "left behind"
    assert os.listdir(work) == [], os.listdir(work)


def test_a_work_dir_that_cannot_be_made_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    p = run("scenario", "run", "--driver", "vfs", "--work-dir", blocker / "sub", MUST_FAIL)
    assert p.returncode == 1 and p.stdout == "", (p.returncode, p.stdout)
    assert str(blocker) in p.stderr and "Not a directory" in p.stderr, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["file"]
