"""The image cache: a corrupt entry is detected by `vm run` and rebuilt by `vm build`.

Works on a copy of the built profile in a temporary COWLAB_CACHE, so the real cache is untouched.
"""
import json
import os
import shutil
import subprocess

from conftest import COWLAB, cache_dir


def run(env, *args, timeout=900):
    return subprocess.run([COWLAB, "vm", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_corrupt_entry_is_detected_and_rebuilt(profile, tmp_path):
    real = cache_dir()
    manifest = json.load(open(os.path.join(real, "profiles", f"{profile}.json")))
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    (cache / "profiles").mkdir()
    for kind in ("kernel", "root", "zfs"):
        name = os.path.basename(manifest["artifacts"].get(kind, ""))
        if name:
            subprocess.run(["cp", "-a", "--sparse=always", os.path.join(real, "images", name), str(cache / "images")],
                           check=True)
    shutil.copy(os.path.join(real, "profiles", f"{profile}.json"), cache / "profiles")
    env = dict(os.environ, COWLAB_CACHE=str(cache), COWLAB_ACCEL="tcg")
    kernel_dir = cache / "images" / os.path.basename(manifest["artifacts"]["kernel"])

    ok = run(env, "run", "--profile", profile, "-q", "--", "true")
    assert ok.returncode == 0, ok.stderr

    with open(kernel_dir / "boot.cpio", "ab") as f:  # a damaged entry
        f.write(b"garbage")
    bad = run(env, "run", "--profile", profile, "--", "true")
    assert bad.returncode == 1, bad.stderr
    assert "boot.cpio changed size" in bad.stderr and f"cowlab vm build --profile {profile}" in bad.stderr, bad.stderr

    fixed = run(env, "build", "--profile", profile, "--quick-verify")
    assert fixed.returncode == 0, fixed.stderr
    assert "kernel: cache entry" in fixed.stderr and "rebuilding" in fixed.stderr, fixed.stderr
    assert "root: cached" in fixed.stderr, fixed.stderr
    assert not list((cache / "tmp").glob("kernel-*")), "build left a temporary directory"
    again = run(env, "run", "--profile", profile, "-q", "--", "true")
    assert again.returncode == 0, again.stderr
