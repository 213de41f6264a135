"""A small matrix in real guests (issue 5): two drivers, three scenarios — one passing, one that
must fail, one whose guest panics on purpose — and checks of the JSON, JUnit XML and HTML
reports, the reproducer bundles, and that the matrix carried on after the panic."""
import json
import os
import subprocess
import xml.etree.ElementTree as ET

import pytest

COWLAB = os.environ.get("COWLAB_BIN", "cowlab")
HERE = os.path.dirname(os.path.abspath(__file__))
PROFILE = os.environ.get("COWLAB_MATRIX_PROFILE", "debian-6.1")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix")
    p = subprocess.run([COWLAB, "matrix", "--profiles", PROFILE, "--drivers", "overlay,vfs", "-j", "2",
                        "--out", str(out), os.path.join(HERE, "scenarios")],
                       capture_output=True, text=True, timeout=1800)
    return p, out


def cells(out):
    doc = json.load(open(os.path.join(out, "results.json")))
    return doc, {(r["scenario"], r["driver"]): r for r in doc["results"]}


def test_exit_status_says_complete_with_failures(matrix):
    p, out = matrix
    assert p.returncode == 3, p.stderr[-4000:]
    assert "report:" in p.stdout and "report.html" in p.stdout
    # Live progress named every cell as it finished.
    assert "pass-simple" in p.stderr and "must-fail" in p.stderr


def test_results_json(matrix):
    _, out = matrix
    doc, c = cells(out)
    assert doc["drivers"] == ["overlay", "vfs"]
    assert doc["profiles"][0]["name"] == PROFILE and doc["profiles"][0]["kernel_release"]
    assert set(c) == {(s, d) for s in ["guest-panic", "must-fail", "pass-simple"] for d in ["overlay", "vfs"]}
    assert c[("pass-simple", "overlay")]["status"] == "pass"
    assert c[("pass-simple", "vfs")]["status"] == "pass"
    for d in ["overlay", "vfs"]:
        r = c[("must-fail", d)]
        assert r["status"] == "fail"
        f = r["failures"][0]
        assert "content" in f["expectation"] and "goodbye" in f["expected"] and "hello" in f["observed"]
        assert r["kernel"] == doc["profiles"][0]["kernel_release"]
    assert c[("guest-panic", "overlay")]["status"] == "skip"
    assert "applies to vfs" in c[("guest-panic", "overlay")]["reason"]
    panic = c[("guest-panic", "vfs")]
    assert panic["status"] == "panic", panic
    assert "Kernel panic" in panic["console_excerpt"] or "sysrq" in panic["console_excerpt"].lower()


def test_matrix_went_on_after_the_panic(matrix):
    _, out = matrix
    _, c = cells(out)
    # guest-panic sorts first in the vfs batch: the other two ran in a fresh guest.
    assert c[("must-fail", "vfs")]["status"] == "fail"
    assert c[("pass-simple", "vfs")]["status"] == "pass"


def test_junit(matrix):
    _, out = matrix
    root = ET.parse(os.path.join(out, "junit.xml")).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 6
    by = {(tc.get("classname"), tc.get("name")): tc for tc in cases}
    assert by[(f"{PROFILE}.vfs", "must-fail")].find("failure") is not None
    assert by[(f"{PROFILE}.overlay", "guest-panic")].find("skipped") is not None
    err = by[(f"{PROFILE}.vfs", "guest-panic")].find("error")
    assert err is not None and err.get("type") == "panic"
    assert by[(f"{PROFILE}.vfs", "pass-simple")].find("failure") is None
    suite = root.find("testsuite")
    assert suite.get("failures") == "2" and suite.get("errors") == "1" and suite.get("skipped") == "1"


def test_html(matrix):
    _, out = matrix
    html = open(os.path.join(out, "report.html")).read()
    assert html.startswith("<!DOCTYPE html>")
    # The HTML builder (html_builder.h) writes attributes in double quotes.
    for s in ["guest-panic", "must-fail", "pass-simple", 'class="c panic"', 'class="c fail"', 'class="c pass"',
              "goodbye", PROFILE]:
        assert s in html, s


def test_reproducers(matrix):
    _, out = matrix
    rdir = os.path.join(out, "reproducers")
    bundles = sorted(os.listdir(rdir))
    assert len(bundles) == 3  # must-fail x2, guest-panic on vfs
    b = os.path.join(rdir, [x for x in bundles if "must-fail" in x and "vfs" in x][0])
    assert os.path.exists(os.path.join(b, "must-fail.yaml"))
    assert os.path.exists(os.path.join(b, "profile-manifest.json"))
    script = open(os.path.join(b, "rerun.sh")).read()
    # rerun.sh runs the cowlab it finds ($COWLAB, PATH, /usr/local/bin) on this cell only, and
    # checks that the guest's kernel is the one recorded in the bundle.
    assert f'"$cowlab" matrix --profiles {PROFILE} --drivers vfs --expect-manifest' in script
    assert os.access(os.path.join(b, "rerun.sh"), os.X_OK)


def test_merge_of_shards(tmp_path):
    outs = []
    for i in range(2):
        o = tmp_path / f"shard{i}"
        p = subprocess.run([COWLAB, "matrix", "--profiles", PROFILE, "--drivers", "overlay", "--shard", f"{i}/2",
                            "--out", str(o), os.path.join(HERE, "scenarios", "pass-simple.yaml"),
                            os.path.join(HERE, "scenarios", "must-fail.yaml")],
                           capture_output=True, text=True, timeout=1200)
        assert p.returncode in (0, 3), p.stderr[-3000:]
        outs.append(str(o))
    merged = tmp_path / "merged"
    p = subprocess.run([COWLAB, "matrix", "merge", *outs, "--out", str(merged)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    _, c = cells(merged)
    assert set(c) == {("pass-simple", "overlay"), ("must-fail", "overlay")}


def test_interrupt_writes_the_finished_cells_and_resume_completes(tmp_path):
    """SIGINT (issue 14): guests shut down, their run directories (scratch disk, initrd, QMP
    socket) are removed, the report has the finished cells and the rest `interrupted`, exit 130;
    --resume DIR runs only what is missing."""
    import signal
    out = tmp_path / "int"
    files = [os.path.join(HERE, "scenarios", f) for f in ("pass-simple.yaml", "must-fail.yaml")]
    p = subprocess.Popen([COWLAB, "matrix", "--profiles", PROFILE, "--drivers", "vfs", "-j", "1", "--out", str(out),
                          *files], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stderr:
        seen.append(line)
        if line.startswith("[1/2]"):
            break
    else:
        pytest.fail("the matrix ended before its first cell:\n" + "".join(seen[-40:]))
    p.send_signal(signal.SIGINT)
    stdout, rest = p.communicate(timeout=300)
    assert p.returncode == 130, "".join(seen[-20:]) + rest[-3000:]
    assert "--resume" in stdout
    run_dirs = os.path.join(os.environ.get("COWLAB_CACHE", os.path.expanduser("~/.cache/cowlab")), "run")
    leftovers = [d for d in (os.listdir(run_dirs) if os.path.isdir(run_dirs) else []) if d.startswith(f"{p.pid}-")]
    assert leftovers == [], leftovers
    doc = json.load(open(out / "results.json"))
    assert doc["interrupted"] is True
    statuses = sorted(r["status"] for r in doc["results"])
    assert len(statuses) == 2 and "interrupted" in statuses and statuses != ["interrupted", "interrupted"], statuses
    finished = [r for r in doc["results"] if r["status"] != "interrupted"][0]
    # The whole serial console is kept, even when a clean boot (loglevel=4) printed nothing on it;
    # the kernel log always has the boot.
    assert os.path.isfile(out / finished["console_log"])
    assert "Linux version" in open(out / finished["dmesg_log"], errors="replace").read()
    p = subprocess.run([COWLAB, "matrix", "--profiles", PROFILE, "--drivers", "vfs", "--resume", str(out), *files],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 3, p.stderr[-3000:]  # must-fail fails
    doc = json.load(open(out / "results.json"))
    assert doc["interrupted"] is False
    by = {r["scenario"]: r for r in doc["results"]}
    assert by["pass-simple"]["status"] == "pass" and by["must-fail"]["status"] == "fail"
    assert by[finished["scenario"]] == finished  # kept as it was, not rerun
    assert "resuming" in p.stderr and "1 cells already finished" in p.stderr


def test_a_second_guest_takes_what_still_waits_when_a_slot_falls_idle(tmp_path):
    """One driver on two slots (docs/matrix.md, "Scheduling"): the guests take their scenarios
    one at a time, so when the second slot has nothing of its own, a second guest of the same
    driver takes what still waits (the claims' images take seconds each to import under TCG, a
    guest about 4 s to boot: it pays) — and every scenario still runs exactly once."""
    scenario_dir = os.path.join(os.path.dirname(os.path.dirname(HERE)), "scenarios", "claims")
    out = tmp_path / "helper"
    p = subprocess.run([COWLAB, "matrix", "--profiles", PROFILE, "--drivers", "vfs", "-j", "2", "--repeat", "3",
                        "--out", str(out), scenario_dir], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "one more guest for " + PROFILE + "/vfs (it has 1)" in p.stderr, p.stderr[-4000:]
    doc = json.load(open(out / "results.json"))
    guests_of = {}  # scenario -> the guests its cells (sweep points) ran in
    for r in doc["results"]:
        assert r["status"] in ("pass", "skip"), r
        assert r["status"] == "skip" or r["runs"]["total"] == 3, r
        guests_of.setdefault(r["scenario"], set()).add(r["console_log"])
    assert all(len(g) == 1 for g in guests_of.values()), guests_of  # no scenario ran twice
    assert len(set().union(*guests_of.values())) == 2, guests_of  # both guests ran some
    want = {f for f in os.listdir(scenario_dir) if f.endswith(".yaml")}
    assert {os.path.basename(r["host_file"]) for r in doc["results"]} == want
