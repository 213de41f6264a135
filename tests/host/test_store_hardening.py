"""Store hardening through the CLI (issue 11): locking, staged inputs, `diff -o`, strict inputs
and messages.  Each test failed before its fix."""
import gzip
import json
import os
import stat
import subprocess
import time

from conftest import COWLAB, Cowlab, mounts_under
from tarbuild import entry, make_tar

E = entry


def base_tar():
    return make_tar([E("etc", "dir"), E("etc/hostname", data=b"cowlab\n")])


# Item 11: an invalid layer id and a malformed --storage-opt are usage errors (exit 2), and
# an id with control characters is printed escaped.
def test_invalid_id_and_malformed_storage_opt_exit_2(cow):
    p = cow.run("create-layer", "bad\nid")
    assert p.returncode == 2, p.stderr
    err = p.stderr.decode()
    assert "bad\\nid" in err and "bad\nid" not in err, err
    p = cow.run("--storage-opt", "novalue", "layers")
    assert p.returncode == 2, p.stderr
    assert "novalue" in p.stderr.decode()


# Item 8: an option of another driver is refused, naming it and the selected driver.
def test_storage_opt_of_another_driver_is_refused(cow):
    p = cow.run("--storage-opt", "dm.basesize=10G", "layers")
    assert p.returncode != 0
    err = p.stderr.decode()
    assert "dm.basesize" in err and cow.driver in err, err


# Item 8: empty input, a tar cut at a block boundary and a gzip with a bad CRC are refused,
# and leave no layer behind.
def test_bad_inputs_are_refused_and_leave_nothing(cow):
    tar = base_tar()
    gz = bytearray(gzip.compress(tar))
    gz[-8] ^= 1  # CRC-32 of the trailer
    cut = tar[:1024]  # the pax header and the directory's header: no end-of-archive marker
    for name, data in [("empty", b""), ("cut", cut), ("crc", bytes(gz))]:
        p = cow.run("import-layer", name, "-", input=data)
        assert p.returncode == 1, (name, p.stderr)
        assert p.stderr.decode().startswith(f"cowlab: import-layer {name}"), (name, p.stderr)
        assert cow.run("exists", name).returncode == 1, name
    assert os.listdir(os.path.join(cow.root, "tmp")) == []


# Item 9: diff -o writes through the path: a device stays a device, a symlink is followed,
# /proc/self/fd/1 works.
def test_diff_output_is_written_through(cow, workdir):
    cow.run("import-layer", "a", "-", input=base_tar(), check=True)
    link = os.path.join(workdir, "link.tar")
    target = os.path.join(workdir, "target.tar")
    open(target, "wb").close()
    os.symlink(target, link)
    cow.run("diff", "a", "-o", link, check=True)
    assert os.path.islink(link), "the symlink was replaced"
    assert os.path.getsize(target) > 0
    null = os.path.join(workdir, "null")
    os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))
    cow.run("diff", "a", "-o", null, check=True)
    assert os.stat(null).st_rdev == os.makedev(1, 3), "the device node was replaced"
    out = os.path.join(workdir, "out.tar")
    with open(out, "wb") as f:
        p = subprocess.run([COWLAB, "--root", cow.root, "--driver", cow.driver, "diff", "a", "-o",
                            "/proc/self/fd/1"], stdout=f, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0, p.stderr
    assert open(out, "rb").read() == open(target, "rb").read()


# Item 9: whether `diff -o` created its output is decided by O_CREAT|O_EXCL, and a failing
# diff removes only the regular file it created, while the name is still that file.  Before,
# a stat() before the open() decided it and the path was unlinked by name: a file put there
# by someone else while the diff ran was removed, and for a dangling symlink the symlink went
# while the file created through it stayed.
def test_failing_diff_removes_only_the_file_it_created(cow, workdir):
    cow.run("import-layer", "a", "-", input=base_tar(), check=True)
    base = [COWLAB, "--root", cow.root, "--driver", cow.driver]
    # A device node (not the real /dev/null) survives a successful and a failing diff and
    # stays a character device.
    null = os.path.join(workdir, "null")
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    cow.run("diff", "a", "-o", null, check=True)
    assert cow.run("diff", "missing", "-o", null).returncode == 1
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3), "the device node was replaced"
    # An existing regular file that a failing diff targets stays.
    existing = os.path.join(workdir, "existing.tar")
    with open(existing, "wb") as f:
        f.write(b"mine")
    assert cow.run("diff", "missing", "-o", existing).returncode == 1
    assert os.path.isfile(existing), "a file the diff did not create was removed"
    # A file a failing diff created is removed.
    made = os.path.join(workdir, "made.tar")
    p = cow.run("diff", "missing", "-o", made)
    assert p.returncode == 1 and b"missing" in p.stderr, p.stderr
    assert not os.path.lexists(made), "the file the failed diff created was left behind"
    # A dangling symlink: its target is created (as the shell's >) and removed again on
    # failure; the symlink stays.
    link = os.path.join(workdir, "link.tar")
    target = os.path.join(workdir, "target.tar")
    os.symlink("target.tar", link)
    assert cow.run("diff", "missing", "-o", link).returncode == 1
    assert os.path.islink(link), "the symlink was removed"
    assert not os.path.lexists(target), "the file created through the symlink was left behind"
    cow.run("diff", "a", "-o", link, check=True)
    assert os.path.islink(link) and os.path.getsize(target) > 0
    # The name replaced while the diff runs (it waits for the store lock, then gives up): the
    # replacement — a regular file, then a device node — is not the diff's to remove.
    for kind in ("file", "device"):
        out = os.path.join(workdir, f"raced-{kind}.tar")
        holder = subprocess.Popen(["flock", "-o", "-x", os.path.join(cow.root, "lock"), "sleep", "30"])
        try:
            time.sleep(0.3)
            d = subprocess.Popen(base + ["--lock-timeout", "3", "diff", "a", "-o", out],
                                 stderr=subprocess.PIPE)
            deadline = time.monotonic() + 10
            while not os.path.lexists(out) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert os.path.lexists(out), "the diff did not create its output while waiting"
            os.unlink(out)
            if kind == "file":
                with open(out, "wb") as f:
                    f.write(b"someone else's")
            else:
                os.mknod(out, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
            _, err = d.communicate(timeout=60)
            assert d.returncode == 1 and b"timed out" in err, err
        finally:
            holder.kill()
            holder.wait()
        assert os.path.lexists(out), f"the {kind} put in place of the diff's output was removed"
        st = os.lstat(out)
        assert stat.S_ISREG(st.st_mode) if kind == "file" else stat.S_ISCHR(st.st_mode)


# `info --all` probes every driver as a reader: under the store's shared lock, each driver
# opened with shared access.  Before, it took no lock at all (and opened every driver for
# writing, so its cleanup could close devicemapper's pool under a running command): a writer
# holding the lock did not stop it.  A writer makes it wait now; a reader does not.
def test_info_all_takes_the_shared_store_lock(cow):
    cow.run("create-layer", "a", check=True)
    lock = os.path.join(cow.root, "lock")
    for mode in ("-x", "-s"):
        holder = subprocess.Popen(["flock", "-o", mode, lock, "sleep", "30"])
        try:
            time.sleep(0.3)
            p = cow.run("--lock-timeout", "1.5", "info", "--all", driver=False)
        finally:
            holder.kill()
            holder.wait()
        err = p.stderr.decode()
        if mode == "-x":
            assert p.returncode == 1, f"info --all ran while a writer held the lock: {p.stdout}"
            assert "timed out after 1.5s waiting for the store lock" in err, err
        else:
            assert p.returncode == 0, err
            rows = {line.split()[0]: line.split()[1] for line in p.stdout.decode().splitlines()}
            assert rows.get("vfs") == "usable" and rows.get(cow.driver) == "usable", rows
    assert cow.run("exists", "a").returncode == 0


# Concurrent `info --all` runs on a fresh root.  Before, each probe made the driver homes
# <root>/<name> it did not find and removed them after: a second probe found such a home
# (so kept it, or had it removed under its own overlay test mounts).  Seen: in 30 pairs on
# ext4, 16 roots kept an overlay home (which pins overlay at the next selection), 4 a vfs home,
# and 2 runs reported overlay unusable ("open .../overlay/.probe-*/metacopy/lower/f: ENOENT").
# A driver without a home is now tried in a directory private to the probe (tmp/probe-*).
def test_concurrent_info_all_leave_no_home_and_agree(workdir):
    pairs = 12
    for i in range(pairs):
        root = os.path.join(workdir, f"r{i}")
        cmd = [COWLAB, "--root", root, "--json", "info", "--all"]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err.decode()
            rows = {r["driver"]: r for r in json.loads(out)}
            for d in ("vfs", "overlay"):
                assert rows[d]["usable"], f"pair {i}: {d} unusable beside another probe: {rows[d]}"
        assert sorted(os.listdir(root)) == ["lock", "tmp"], f"pair {i}: {os.listdir(root)}"
        assert os.listdir(os.path.join(root, "tmp")) == [], f"pair {i}: probe directories left"


# Readers run at once under the shared lock; after a reboot (or any change of the probe
# fingerprint) each overlay reader finds the cached probe results stale and probes in a
# .probe-<random> dir of its own in the home.  Before, every reader's init also removed all
# .probe-* dirs it found, so a reader unmounted and deleted another's probe under it (its
# `layers` then failed: ENOENT in the probe, or "test mount failed").  Only a writer removes
# them now.  Rounds of 4 concurrent readers, each round with the cache made stale.
def test_concurrent_readers_with_stale_probes_do_not_break_each_other(workdir):
    cow = Cowlab(os.path.join(workdir, "root"), "overlay")
    cow.run("create-layer", "a", check=True)
    cache = os.path.join(cow.root, "overlay", "probes")
    cmd = [COWLAB, "--root", cow.root, "--driver", "overlay", "layers"]
    failures = []
    rounds = 25
    for i in range(rounds):
        with open(cache, "w") as f:
            f.write("stale\n")
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(4)]
        for p in procs:
            out, err = p.communicate(timeout=120)
            if p.returncode != 0 or b"a" not in out.split():
                failures.append(f"round {i}: exit {p.returncode}: {err.decode().strip()}")
    assert not failures, f"{len(failures)} of {4 * rounds} readers failed: {failures[:3]}"
    home = os.path.join(cow.root, "overlay")
    assert [n for n in os.listdir(home) if n.startswith(".probe-")] == [], os.listdir(home)
    assert not mounts_under(cow.root)
    cow.run("wipe", check=True)


# A probe killed inside an overlay test mount leaves a mount in its tmp/probe-* directory.
# Readers leave it (a reader does not count it as work to recover, so it waits for no writer's
# lock), the next writer detaches it and removes the directory.  Before, a writer's recovery
# removed tmp/ entries without unmounting: EBUSY, and every writer was locked out.
def test_a_killed_probes_mount_in_tmp_goes_with_the_next_writer(cow):
    cow.run("create-layer", "a", check=True)
    left = os.path.join(cow.root, "tmp", "probe-999999-0123456789ab", "overlay", ".probe-x", "merged")
    os.makedirs(left)
    subprocess.run(["mount", "-t", "tmpfs", "probe-leftover", left], check=True)
    try:
        p = cow.run("layers")
        assert p.returncode == 0, p.stderr
        assert b"recovered" not in p.stderr, p.stderr
        p = cow.run("create-layer", "b", "--parent", "a")
        assert p.returncode == 0, p.stderr.decode()
        assert "removed 1 staging leftover(s) in tmp/" in p.stderr.decode(), p.stderr
        assert os.listdir(os.path.join(cow.root, "tmp")) == []
    finally:
        if os.path.ismount(left):
            subprocess.run(["umount", "-l", left])


# Item 6: a slow pipe holds no lock: `import-layer` stages its input first, `diff` to a pipe
# stages its output, so a writer runs meanwhile; a waiting command says whom it waits for;
# --lock-timeout gives up.
def test_slow_pipes_hold_no_lock_and_waiting_is_explained(cow):
    cow.run("import-layer", "a", "-", input=base_tar(), check=True)
    base = [COWLAB, "--root", cow.root, "--driver", cow.driver]
    # An import whose input never ends does not hold the store.
    feeder = subprocess.Popen(base + ["import-layer", "slow", "-"], stdin=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    feeder.stdin.write(base_tar()[:512])
    feeder.stdin.flush()
    try:
        time.sleep(0.5)
        p = cow.run("--lock-timeout", "5", "create-layer", "w1")
        assert p.returncode == 0, p.stderr
        # A diff whose reader does not read does not hold the store either.
        reader_r, reader_w = os.pipe()
        d = subprocess.Popen(base + ["diff", "a"], stdout=reader_w, stderr=subprocess.PIPE)
        os.close(reader_w)
        try:
            time.sleep(1.0)
            p = cow.run("--lock-timeout", "5", "create-layer", "w2")
            assert p.returncode == 0, p.stderr
        finally:
            os.close(reader_r)
            d.wait(timeout=60)
    finally:
        feeder.kill()
        feeder.wait()
    # A held lock: the waiter names the holder after a second and gives up at its timeout.
    holder = subprocess.Popen(["flock", "-o", "-x", os.path.join(cow.root, "lock"), "sleep", "30"])
    try:
        time.sleep(0.5)
        p = cow.run("--lock-timeout", "2.5", "layers")
        err = p.stderr.decode()
        assert p.returncode == 1, err
        assert "waiting for the store lock held by PID" in err, err
        assert "timed out after 2.5s" in err, err
    finally:
        holder.kill()
        holder.wait()


# Item 4: one damaged metadata file blocks nothing: `layers` and `info` report it, and
# `delete-layer` removes it.
def test_damaged_metadata_is_reported_and_deletable(cow):
    cow.run("import-layer", "a", "-", input=base_tar(), check=True)
    with open(os.path.join(cow.root, "layers", "broken.json"), "w") as f:
        f.write("{oops")
    # The first command, a reader here, quarantines it (readers recover too) and says so.
    p = cow.run("layers", check=True)
    assert "broken damaged:" in p.stdout.decode(), p.stdout
    assert "a" in p.stdout.decode().split()
    assert "quarantined layer broken" in p.stderr.decode(), p.stderr
    assert "Damaged Layers: 1" in cow.run("info", check=True).stdout.decode()
    p = cow.run("create-layer", "b", check=True)
    assert "recovered" not in p.stderr.decode(), p.stderr
    cow.run("delete-layer", "broken", check=True)
    assert "damaged" not in cow.run("layers", check=True).stdout.decode()


# Item 11: errors name the layer id, never the driver's cache id, and the operation.
def test_errors_name_the_layer_not_the_cache_id(cow):
    cow.run("import-layer", "a", "-", input=base_tar(), check=True)
    cache = cow.json("layers")[0]["cache_id"]
    # Valid tar, fails while applying: a hard link to a missing file.
    bad = make_tar([E("x", data=b"x"), E("l", "hardlink", link="missing")])
    p = cow.run("applydiff", "a", "-", input=bad)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert "apply-diff layer a" in err and cache not in err, err
