"""Matrix reports without guests (issue 14): `cowlab matrix merge` renders results.json,
junit.xml and report.html from cell results, so the report writers are tested on known cells:
results.json against the JSON Schema in docs/, junit.xml against the Jenkins JUnit schema with
xmllint, units, numeric sweep order, the first failed expectation as the message."""
import json
import os
import re
import socket
import subprocess
import xml.etree.ElementTree as ET

import pytest

from browser import clipped, png_size, render  # noqa: F401 (headless Chromium)
from conftest import COWLAB

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
XSD = os.path.join(HERE, "junit-jenkins.xsd")
SCHEMA = os.path.join(REPO, "docs", "results.schema.json")


def cell(scenario, driver, status, **kw):
    r = {"scenario": scenario, "driver": driver, "profile": "debian-6.1", "kernel": "6.1.0-28-cloud-amd64",
         "status": status, "reason": "", "duration_s": 1.5, "sweep": {}, "measurements": {}, "failures": []}
    r.update(kw)
    return r


CELLS = [
    # Sweep points deliberately out of order, with sizes that sort wrongly as text.
    *[cell("copy-up-file-level", "overlay", "pass", sweep={"size": s}, measurements={"copy_up": b, "copy_up_time": 0.0123},
           units={"copy_up": "bytes", "copy_up_time": "s"})
      for s, b in [("64MiB", 67108864), ("1MiB", 1048576), ("16MiB", 16777216), ("4KiB", 4096)]],
    cell("must-fail", "vfs", "fail", failures=[
        {"expectation": "view c1:/greeting content", "expected": "goodbye", "observed": "hello"},
        {"expectation": "measure copy_up", "expected": ">= 64.0 MiB (67108864 B)", "observed": "4.0 KiB (4096 B)"}]),
    cell("guest-panic", "vfs", "panic", reason="guest kernel panic",
         console_excerpt="[   12.5] Kernel panic - not syncing: sysrq <triggered> & \x07bell\x1b[0m\n"),
    cell("guest-panic", "overlay", "skip", reason="scenario applies to vfs"),
    cell("lookup-vs-depth", "vfs", "interrupted", reason="matrix interrupted (SIGINT) before this cell ran"),
]


def write_input(tmp_path, cells=CELLS, **top):
    d = tmp_path / "in"
    d.mkdir()
    doc = {"command": "cowlab matrix scenarios", "wall_seconds": 12.25,
           "profiles": [{"name": "debian-6.1", "kernel_release": "6.1.0-28-cloud-amd64", "manifest": "",
                         "accel": "tcg (no /dev/kvm)"}],
           "drivers": ["overlay", "vfs"], "results": cells}
    doc.update(top)
    (d / "results.json").write_text(json.dumps(doc))
    return d


@pytest.fixture
def report(tmp_path):
    src = write_input(tmp_path)
    out = tmp_path / "out"
    p = subprocess.run([COWLAB, "matrix", "merge", str(src), "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out


def xmllint(path):
    return subprocess.run(["xmllint", "--noout", "--schema", XSD, str(path)], capture_output=True, text=True)


def test_junit_validates_against_the_jenkins_schema(report):
    p = xmllint(report / "junit.xml")
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("fault", [
    ("<testcase ", "<testcase><properties><property name='a' value='b'/></properties></testcase><testcase "),
    ('time="12.250"', 'time="1.225e+01"'),
    ("<testsuite ", "<testsuite bogus='1' "),
])
def test_schema_check_catches_what_jenkins_rejects(report, tmp_path, fault):
    text = (report / "junit.xml").read_text()
    assert fault[0] in text
    broken = tmp_path / "broken.xml"
    broken.write_text(text.replace(fault[0], fault[1], 1))
    assert xmllint(broken).returncode != 0


def test_junit_content(report):
    root = ET.parse(report / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite.get("hostname") == socket.gethostname()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", suite.get("timestamp")), suite.get("timestamp")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["overlay/copy-up-file-level[size=64MiB]/copy_up"] == "64.0 MiB (67108864 B)"
    assert props["overlay/copy-up-file-level[size=64MiB]/copy_up_time"] == "12.3 ms"
    assert props["cowlab_version"].startswith("cowlab ")
    assert props["accel"] == "tcg (no /dev/kvm)"
    names = [tc.get("name") for tc in suite.findall("testcase") if tc.get("name").startswith("copy-up")]
    assert names == [f"copy-up-file-level[size={s}]" for s in ["4KiB", "1MiB", "16MiB", "64MiB"]]
    cases = {(tc.get("classname"), tc.get("name")): tc for tc in suite.findall("testcase")}
    failure = cases[("debian-6.1.vfs", "must-fail")].find("failure")
    assert failure.get("message") == "view c1:/greeting content: expected goodbye, observed hello"
    assert "measure copy_up: expected >= 64.0 MiB" in failure.text
    panic = cases[("debian-6.1.vfs", "guest-panic")]
    assert panic.find("error").get("type") == "panic"
    assert "Kernel panic - not syncing: sysrq <triggered> &" in panic.find("system-out").text
    assert cases[("debian-6.1.vfs", "lookup-vs-depth")].find("error").get("type") == "interrupted"
    assert suite.get("tests") == "8" and suite.get("failures") == "1" and suite.get("errors") == "2"
    assert suite.get("skipped") == "1"


def test_results_json_follows_its_schema(report):
    import jsonschema
    doc = json.load(open(report / "results.json"))
    schema = json.load(open(SCHEMA))
    jsonschema.validate(doc, schema)
    assert doc["schema_version"] == 2
    version = subprocess.run([COWLAB, "--version"], capture_output=True, text=True).stdout.strip()
    assert doc["cowlab_version"] == version  # the input had none: the merging binary's
    assert doc["hostname"] == socket.gethostname() and doc["host"]["cpus"] >= 1
    # The schema catches a cell without a status and an unknown status.
    bad = json.loads(json.dumps(doc))
    del bad["results"][0]["status"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad["results"][0]["status"] = "passed"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_merge_keeps_the_run_metadata(tmp_path):
    src = write_input(tmp_path, schema_version=2, cowlab_version="cowlab 0.1.0 (git 0123456789ab)",
                      started="2026-01-02T03:04:05Z", hostname="buildhost",
                      host={"kernel": "6.1.0", "cpus": 2, "memory_bytes": 1 << 34})
    out = tmp_path / "out"
    p = subprocess.run([COWLAB, "matrix", "merge", str(src), "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    doc = json.load(open(out / "results.json"))
    assert doc["cowlab_version"] == "cowlab 0.1.0 (git 0123456789ab)"
    assert doc["started"] == "2026-01-02T03:04:05Z" and doc["hostname"] == "buildhost"
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("timestamp") == "2026-01-02T03:04:05Z" and suite.get("hostname") == "buildhost"


def test_merge_of_a_missing_dir_names_it(tmp_path):
    p = subprocess.run([COWLAB, "matrix", "merge", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "nope" in p.stderr
    assert not (tmp_path / "o").exists()


# ---- report.html in a real browser --------------------------------------------------------------

CURVES = [
    cell("page-cache-sharing", d, "pass", measurements={f"cache_{i}": v * 1048576 for i, v in enumerate([0.2, 0.1, 0.1, 0.1], 1)},
         units={f"cache_{i}": "bytes" for i in range(1, 5)})
    for d in ("overlay", "vfs", "btrfs")
] + [cell("copy-up-file-level", "zfs", "pass", sweep={"size": s}, measurements={"copy_up": b, "copy_up_time": 0.5},
          units={"copy_up": "bytes", "copy_up_time": "s"}) for s, b in [("1MiB", 1048576), ("64MiB", 67108864)]]


def merged(tmp_path, cells, name):
    d = tmp_path / name
    d.mkdir()
    src = write_input(d, cells)
    out = d / "out"
    p = subprocess.run([COWLAB, "matrix", "merge", str(src), "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out / "report.html"


def test_html_renders_unclipped_with_fixed_colours_and_integer_ticks(tmp_path):
    page = merged(tmp_path, CURVES + CELLS, "curves")
    dom, shot = render(page, tmp_path)
    assert clipped(dom) == []
    width, height = png_size(shot)
    assert (width, height) == (1280, 1600) and os.path.getsize(shot) > 20000  # a page was drawn, not blank
    # One colour per driver, whatever else is in the report.
    legend = dict(re.findall(r'<rect[^>]*fill="(#[0-9a-f]{6})"[^>]*data-driver="([a-z]+)"', dom))
    colours = {d: c for c, d in legend.items()}
    assert colours["overlay"] == "#1f77b4" and colours["vfs"] == "#ff7f0e" and colours["zfs"] == "#d62728"
    other, _ = render(merged(tmp_path, CURVES[1:2], "vfs-only"), tmp_path, "vfs-only")
    assert dict((d, c) for c, d in re.findall(r'<rect[^>]*fill="(#[0-9a-f]{6})"[^>]*data-driver="([a-z]+)"', other)) == {
        "vfs": "#ff7f0e"}
    # The page-cache chart counts containers: integer ticks only; every tick is a plain number.
    chart = dom[dom.index("Page-cache growth"):]
    chart = chart[:chart.index("</svg>")]
    xticks = re.findall(r'<text[^>]*text-anchor="middle"[^>]*class="tk"[^>]*>([^<]*)</text>', chart)
    assert xticks and all(re.fullmatch(r"\d+", t) for t in xticks), xticks
    for t in re.findall(r'class="tk"[^>]*>([^<]*)</text>', dom):
        assert re.fullmatch(r"-?\d+(\.\d{1,3})?|[a-z]+", t), t
    # Units on axes and values.
    assert "page cache growth (MiB)" in dom and "first write (ms)" in dom
    assert "copy_up = 64.0 MiB (67108864 B)" in dom


def test_html_leaves_out_empty_sections(tmp_path):
    page = merged(tmp_path, [cell("pass-simple", "vfs", "pass")], "plain")
    dom, _ = render(page, tmp_path, "plain")
    headings = re.findall(r"<h2>([^<]*)</h2>", dom)
    assert headings == ["Matrix"], headings
    assert clipped(dom) == []


def test_clip_check_catches_a_clipped_label(tmp_path):
    page = tmp_path / "clipped-src.html"
    page.write_text("<!DOCTYPE html><html><body><svg width='100' height='50' viewBox='0 0 100 50'>"
                    "<text x='60' y='20'>a label much too long for this chart</text></svg>"
                    "<figure style='width:80px'><figcaption style='white-space:nowrap;overflow:hidden'>"
                    "an unwrappable caption far wider than its box</figcaption></figure></body></html>")
    dom, _ = render(page, tmp_path, "clipped")
    assert clipped(dom) == ["a label much too long for this chart",
                            "caption: an unwrappable caption far wider than its box"]
