"""Stopping a build with SIGTERM or SIGINT leaves no process and no partial cache entry.

The recipes are pointed (COWLAB_VM_IMAGES) at a stand-in vm-images directory whose scripts
behave like the real ones under mmdebstrap or a download: the script starts a child that keeps
writing into the build's directory and a grandchild, and waits.  Two commands run them:
`cowlab vm build` (the ZFS recipe, build-zfs.sh, in $COWLAB_CACHE/tmp) and `cowlab kernel source
debian:SERIES` (kbuild/debian-source.sh, in $COWLAB_CACHE/kernel/src/.fetch-SERIES.PID).

Before the fix cowlab signalled only the script's shell: the writer and the grandchild ran on,
orphaned, and the writer put the build directory back after cowlab had removed it; and an
interrupted `kernel source` fetch left its .fetch directory behind (it was removed only when
the script failed, not when it was stopped).
"""
import os
import signal
import subprocess
import time

import pytest

from conftest import COWLAB

# The body of every stand-in recipe: OUT is the directory the build writes.
RECIPE = r"""
echo "::step stand-in for mmdebstrap"
mkdir -p "$out/chroot"
# Like mmdebstrap unpacking into its chroot: keeps writing into the build's directory.
( while :; do mkdir -p "$out/chroot/usr"; date > "$out/chroot/usr/stamp"; sleep 0.1; done ) &
echo $! >> PIDS
# A grandchild: the chroot's compiler under make.
( sleep 600 & echo $! >> PIDS; wait ) &
echo $! >> PIDS
echo $$ >> PIDS
echo started > READY
wait
"""

ZFS_RECIPE = "out=${1:?}\n" + RECIPE
# kbuild/debian-source.sh SERIES OUT: first asked only for the version, then to fetch.
SOURCE_RECIPE = ('[ -n "${COWLAB_SOURCE_ONLY_RESOLVE:-}" ] && { echo "PACKAGE=linux-source-$1=$1.1-1"; exit 0; }\n'
                 'out=${2:?}\n' + RECIPE)

# command, the recipe it runs, and where in the cache a partial build would stay.
COMMANDS = {
    "vm-build": (["vm", "build", "--profile", "fake"], "build-zfs.sh", ZFS_RECIPE, ["tmp", "images"]),
    "kernel-source": (["kernel", "source", "debian:9.9"], "kbuild/debian-source.sh", SOURCE_RECIPE,
                      ["kernel/src"]),
}


def read_pids(path):
    with open(path) as f:
        return [int(line) for line in f if line.strip()]


def runs(pid):
    """True while `pid` runs (a zombie does not: an orphan's waits for init, which may never reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def processes_naming(text):
    """Running processes whose command line contains `text` (the recipe's forked subshells)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and runs(int(pid)):
            found.append((int(pid), cmdline))
    return found


def stand_in(workdir, recipe, text):
    """A vm-images directory with the stand-in `recipe`; returns the env, pids file and ready file."""
    images = os.path.join(workdir, "images")
    for d in ("profiles", "packages", "kbuild"):
        os.makedirs(os.path.join(images, d))
    for name in ("lib.sh", "apt-sources.sh", "packages/base.txt", "packages/runtime.txt"):
        with open(os.path.join(images, name), "w") as f:
            f.write("# stand-in\n")
    with open(os.path.join(images, "profiles", "fake.conf"), "w") as f:
        f.write("DESCRIPTION=stand-in profile\n")
    with open(os.path.join(images, "resolve.sh"), "w") as f:
        f.write("echo KERNEL_REALM=bookworm\necho KERNEL_RELEASE=6.1.0-fake\n")
    pids, ready = os.path.join(workdir, "pids"), os.path.join(workdir, "ready")
    with open(os.path.join(images, recipe), "w") as f:
        f.write(text.replace("PIDS", f"'{pids}'").replace("READY", f"'{ready}'"))
    env = dict(os.environ, COWLAB_VM_IMAGES=images, COWLAB_CACHE=os.path.join(workdir, "cache"))
    return env, pids, ready


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", COMMANDS)
def test_signal_stops_the_recipe_and_everything_it_started(workdir, command, signo):
    args, recipe, text, partial_dirs = COMMANDS[command]
    env, pids, ready = stand_in(workdir, recipe, text)
    images, cache = env["COWLAB_VM_IMAGES"], env["COWLAB_CACHE"]
    p = subprocess.Popen([COWLAB, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        # READY comes after three pids; the grandchild's is written by its subshell, maybe later.
        while not os.path.exists(ready) or len(read_pids(pids)) < 4:
            assert p.poll() is None, f"cowlab exited early ({p.returncode}): {p.stderr.read().decode()}"
            assert time.time() < deadline, "the stand-in recipe never started"
            time.sleep(0.1)
        started = read_pids(pids)
        assert len(started) == 4 and all(runs(pid) for pid in started), started
        time.sleep(0.5)  # the writer has put files in the build's directory
        os.kill(p.pid, signo)
        _, err = p.communicate(timeout=60)
        err = err.decode()
        assert p.returncode == 128 + signo, err
        assert "interrupted" in err, err

        left = [pid for pid in started if runs(pid)]
        assert not left, f"still running after cowlab exited: {left}"
        assert not processes_naming(images), processes_naming(images)
        # A writer that survived would have recreated the build's directory by now.
        time.sleep(1)
        for d in partial_dirs:
            path = os.path.join(cache, d)
            entries = os.listdir(path) if os.path.isdir(path) else []
            assert not entries, f"partial build left in the cache: {path}: {entries}"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for pid in read_pids(pids) if os.path.exists(pids) else []:
            if runs(pid):
                os.kill(pid, signal.SIGKILL)
        for pid, _ in processes_naming(images):
            os.kill(pid, signal.SIGKILL)
