"""`cowlab kernel build` end to end (issue 9 item 5, docs/kernels.md).

Builds Linux from Debian's linux-source-6.1 with cowlab's minimal config and a patch that adds a
pr_info at overlay mount, boots it, proves the patch runs (dmesg), runs the claims scenarios for
overlay, btrfs and devicemapper on it, rebuilds after one file changed (asserting the build
directory was reused and few objects recompiled), and checks the three clear errors: a patch that
does not apply, a fragment naming an unknown option, a tree that does not compile.

Env: COWLAB_BIN, COWLAB_KBUILD_SOURCE (default debian:6.1).  ctest `vm-kernel-build` (make test)
and `make test-kbuild` run all of it.  The first build on a fresh machine fetches the source
package and compiles the kernel (~10 min on 2 quiet cores, far longer under load); later runs
reuse the build directory and ccache.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import COWLAB, vm_run

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "kernel")
ROOT = os.path.dirname(os.path.dirname(HERE))
SOURCE = os.environ.get("COWLAB_KBUILD_SOURCE", "debian:6.1")
PROFILE = "kbuild-test"
MARK = "cowlab-kbuild-test: overlay mount (patched kernel)"


def kernel_build(*args, timeout=4 * 3600):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        argv = [COWLAB, "kernel", "build", "--source", SOURCE, "--zfs", "no", "--result-json", out, *args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        r = json.load(open(out)) if os.path.exists(out) else None
    return p, r


@pytest.fixture(scope="module")
def built():
    p, r = kernel_build("--patch", os.path.join(DATA, "overlay-mount-message.patch"), "--profile", PROFILE)
    assert p.returncode == 0, p.stderr[-5000:]
    return r


def test_minimal_config_kept_every_requested_option(built):
    # cowlab's own fragments must survive olddefconfig whole: a dropped one would be a guest
    # without overlay or dm-thin, found only when a cell fails.
    assert built["dropped"] == [], built["dropped"]
    assert built["kernel_release"].startswith(SOURCE.split(":")[-1] + ".") or SOURCE.startswith("/")


def test_patched_kernel_boots_and_runs_the_patch(built):
    r = vm_run(PROFILE, timeout=900, cmd=(
        "sh", "-c",
        "uname -r; mkdir -p /tmp/o/l /tmp/o/u /tmp/o/w /tmp/o/m && "
        "mount -t overlay -o lowerdir=/tmp/o/l,upperdir=/tmp/o/u,workdir=/tmp/o/w none /tmp/o/m && "
        "dmesg | grep cowlab-kbuild-test"))
    assert r.rc == 0, r
    assert r.stdout.splitlines()[0] == built["kernel_release"], r.stdout
    assert MARK in r.stdout, r.stdout


def test_vm_profiles_lists_the_built_profile(built):
    # `vm profiles` without --profile must list source-built kernels next to Debian's, with the
    # drivers they can run (it listed only the Debian profiles before).
    p = subprocess.run([COWLAB, "--json", "vm", "profiles", "--no-probe"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert PROFILE in rows, sorted(rows)
    assert rows[PROFILE]["kind"] == "source" and rows[PROFILE]["built"] is True, rows[PROFILE]
    assert rows[PROFILE]["drivers"]["overlay"]["runnable"] is True, rows[PROFILE]["drivers"]


def test_claims_scenarios_on_the_built_kernel(built, tmp_path):
    # Two claims compare timings (snapshot-cost-vs-layer-size: a time ratio <= 3) and one wobble
    # of a loaded TCG host can flip such a cell (seen here once in 33 cells: devicemapper's
    # snapshot ratio, which then passed alone).  --rerun-failures 2 is issue 10's answer: a cell
    # that fails and then passes is reported flaky (exit 0), one that fails three times fails.
    # The report stays in pytest's tmp_path for the failure's reason.
    out = tmp_path / "claims"
    p = subprocess.run([COWLAB, "matrix", "--profiles", PROFILE, "--drivers", "overlay,btrfs,devicemapper",
                        "--rerun-failures", "2", "--out", str(out), os.path.join(ROOT, "scenarios", "claims")],
                       capture_output=True, text=True, timeout=5400)
    summary = [l for l in p.stdout.splitlines() if l.startswith("matrix summary")]
    # 0: every cell passed (or was flaky) or skipped with a reason; 3 names cells that failed.
    assert p.returncode == 0 and summary and " pass=" in summary[0], (
        f"report in {out}\n" + p.stdout[-4000:] + p.stderr[-4000:])
    print(summary[0])


def test_rebuild_after_one_file_changed_reuses_the_build_directory(built):
    # The v2 patch (mail format: applied with git apply) changes the message: one file of
    # fs/overlayfs differs from the first build.  --force: on a second run of this suite the
    # product is already cached.
    p, r = kernel_build("--patch", os.path.join(DATA, "overlay-mount-message-v2.patch"), "--no-images", "--force")
    assert p.returncode == 0, p.stderr[-5000:]
    assert r["build_dir"] == built["build_dir"]
    assert r["build_dir_reused"] is True
    assert not r["cached"]
    # super.c, plus the few objects every kernel link regenerates (version, kallsyms); a full
    # build of this config compiles ~1,400.  An earlier build that was killed part-way leaves
    # the objects it never finished, which make compiles now: 71 here once, after a session's
    # stop had killed a build inside fs/btrfs.  The bound says "incremental", not "nothing else".
    assert 1 <= r["objects_compiled"] <= 150, r
    # The same inputs again: the product is cached, make does not run.
    p, again = kernel_build("--patch", os.path.join(DATA, "overlay-mount-message-v2.patch"), "--no-images")
    assert p.returncode == 0, p.stderr[-3000:]
    assert again["cached"] is True and again["objects_compiled"] == 0


@pytest.fixture
def own_work_dir():
    """A work tree of its own (in the cache: hard links need the source's filesystem), so the
    refusals below run without a kernel build and beside one."""
    base = os.path.join(os.environ.get("COWLAB_CACHE", os.path.expanduser("~/.cache/cowlab")), "kernel")
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="test-work.", dir=base)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_refused_patch_that_does_not_apply_names_file_and_hunk(own_work_dir):
    patch = os.path.join(DATA, "does-not-apply.patch")
    p, _ = kernel_build("--patch", patch, "--no-images", "--work-dir", own_work_dir)
    assert p.returncode == 1, p.stderr
    assert f"patch {patch}: does not apply: fs/overlayfs/super.c: Hunk #1 FAILED at 2183" in p.stderr, p.stderr


def test_refused_unknown_option_in_fragment(own_work_dir):
    frag = os.path.join(DATA, "unknown-option.config")
    p, _ = kernel_build("--config-fragment", frag, "--no-images", "--work-dir", own_work_dir)
    assert p.returncode == 1, p.stderr
    assert "unknown-option.config:3: CONFIG_COWLAB_NO_SUCH_OPTION is not a Kconfig symbol of this tree" in p.stderr, p.stderr
    assert "config: tinyconfig" not in p.stderr and "make " not in p.stderr  # refused before configuring


def test_refused_option_that_olddefconfig_turns_off_names_the_unmet_condition(own_work_dir):
    # An aufs fragment without CONFIG_MISC_FILESYSTEMS once built a whole 6.12 kernel without
    # aufs (77 min) and only warned at the end.
    frag = os.path.join(DATA, "unmet-dependency.config")
    p, _ = kernel_build("--config-fragment", frag, "--no-images", "--work-dir", own_work_dir)
    assert p.returncode == 1, p.stderr
    assert "CONFIG_SQUASHFS=y (from unmet-dependency.config:4) ended up not set" in p.stderr, p.stderr
    assert re.search(r"needs fs/Kconfig:\d+ `if MISC_FILESYSTEMS` \(CONFIG_MISC_FILESYSTEMS not set\)",
                     p.stderr), p.stderr
    assert "make compile" not in p.stderr  # refused before make builds anything


def test_tree_that_does_not_compile_fails_with_the_compiler_error(built):
    p, _ = kernel_build("--patch", os.path.join(DATA, "does-not-compile.patch"), "--no-images")
    assert p.returncode == 1, p.stderr
    assert "kernel build of " + SOURCE + " failed: make exited with status" in p.stderr, p.stderr
    assert "fs/overlayfs/super.c" in p.stderr and "error:" in p.stderr, p.stderr
    assert "build-" in p.stderr and ".log" in p.stderr  # the kept log is named


def test_refused_bad_inputs():
    p = subprocess.run([COWLAB, "kernel", "build", "--source", "debian:six"], capture_output=True, text=True)
    assert p.returncode == 2 and "MAJOR.MINOR" in p.stderr, p.stderr
    p = subprocess.run([COWLAB, "kernel", "build", "--source", "/nonexistent/linux"], capture_output=True, text=True)
    assert p.returncode == 1 and "/nonexistent/linux: not a directory" in p.stderr, p.stderr
    p = subprocess.run([COWLAB, "kernel", "build", "--source", SOURCE, "--patch", "/nonexistent.patch"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "/nonexistent.patch: not found" in p.stderr, p.stderr
