"""The image cache: a corrupt entry is detected by `vm run` and rebuilt by `vm build`; a build
outlives the deletion of the cowlab binary that started it.

Works on a copy of the built profile in a temporary COWLAB_CACHE, so the real cache is untouched.
"""
import fcntl
import json
import os
import shutil
import subprocess
import time

from conftest import COWLAB, cache_dir


def run(env, *args, timeout=900):
    return subprocess.run([COWLAB, "vm", *args], capture_output=True, text=True, timeout=timeout, env=env)


def copy_profile(profile, tmp_path):
    """A private COWLAB_CACHE holding a copy of the built profile (the real cache is untouched)."""
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
    return cache, manifest


def test_corrupt_entry_is_detected_and_rebuilt(profile, tmp_path):
    cache, manifest = copy_profile(profile, tmp_path)
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


def test_a_build_outlives_the_deletion_of_its_binary(profile, tmp_path):
    """Rebuilding cowlab while a long run of it goes on (make, a bisect step, an editor's build)
    unlinks the file it runs from.  The run must still hand its own binary to the image recipes:
    before the binary was pinned at start-up, the recipe got a path that no longer existed and the
    build failed ("COWLAB_BIN '…/cowlab (deleted)'" or "… is not an executable")."""
    cache, _ = copy_profile(profile, tmp_path)
    env = dict(os.environ, COWLAB_CACHE=str(cache), COWLAB_ACCEL="tcg")
    binary = tmp_path / "bin" / "cowlab"
    binary.parent.mkdir()
    shutil.copy(COWLAB, binary)
    (cache / "locks").mkdir(exist_ok=True)
    err_file = tmp_path / "stderr"
    with open(cache / "locks" / "build.lock", "w") as lock, open(err_file, "w") as err_out:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build holds the cache
        proc = subprocess.Popen([str(binary), "vm", "build", "--profile", profile], env=env,
                                stdout=subprocess.DEVNULL, stderr=err_out, text=True)
        deadline = time.monotonic() + 120
        while "waiting for another image build" not in err_file.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err_file.read_text()
            time.sleep(0.1)
        binary.unlink()  # the rebuild: the old file goes first
    proc.wait(timeout=600)
    err = err_file.read_text()
    assert proc.returncode == 0, err
