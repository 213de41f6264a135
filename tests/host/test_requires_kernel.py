"""A scenario whose `requires.kernel` range excludes the running kernel is a skip naming the
range and the running kernel, never a failure (issue 9, applicability per cell)."""
import json
import os
import platform
import subprocess

from conftest import COWLAB

SCENARIO = """scenario: needs-future-kernel
description: runs only on kernels from 99.0 on
requires: {kernel: ">=99.0"}
layers:
  - id: base
    entries:
      - {path: f, content: "x"}
expect:
  - view: {in: base, path: f, content: "x"}
"""


def test_kernel_range_outside_is_a_skip_naming_it(tmp_path):
    f = tmp_path / "future.yaml"
    f.write_text(SCENARIO)
    out = tmp_path / "results.jsonl"
    p = subprocess.run([COWLAB, "scenario", "run", "--driver", "vfs", "--work-dir", str(tmp_path),
                        "--out", str(out), str(f)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    (r,) = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert r["status"] == "skip", r
    assert r["reason"] == f"needs kernel >=99.0, running {platform.release()}", r
