"""CLI contract: exit statuses, info output, layers, diffs and changes on the host drivers."""
import io
import json
import os
import tarfile

from tarbuild import entry, make_tar

E = entry


def test_usage_errors_exit_2(cow):
    assert cow.run().returncode == 2
    assert cow.run("no-such-command").returncode == 2
    assert cow.run("create-layer").returncode == 2  # missing ID


def test_operational_errors_exit_1_and_name_the_object(cow):
    p = cow.run("mount", "missing")
    assert p.returncode == 1
    assert "mount missing" in p.stderr.decode()
    assert cow.run("exists", "missing").returncode == 1
    p = cow.run("create-layer", "../bad")
    assert p.returncode == 2 and "invalid layer id" in p.stderr.decode()  # a usage error


def test_info_prints_docker_style(cow):
    out = cow.run("info", check=True).stdout.decode().splitlines()
    assert out[0] == f" Storage Driver: {cow.driver}"
    assert all(l.startswith("  ") or l.startswith(" ") for l in out)
    if cow.driver == "overlay":
        keys = [l.strip().split(":")[0] for l in out[1:6]]
        # moby's overlay2 order (daemon/graphdriver/overlay2/overlay.go Status()).
        assert keys == ["Backing Filesystem", "Supports d_type", "Using metacopy", "Native Overlay Diff",
                        "userxattr"]
        assert out[1].strip() == "Backing Filesystem: extfs"
    j = cow.json("info")
    assert j["driver"] == cow.driver


def test_info_all_lists_every_driver(workdir):
    from conftest import Cowlab
    c = Cowlab(os.path.join(workdir, "r"))
    p = c.run("--json", "info", "--all", check=True)
    rows = {r["driver"]: r for r in json.loads(p.stdout)}
    assert set(rows) >= {"aufs", "btrfs", "zfs", "devicemapper", "overlay", "vfs"}
    assert rows["vfs"]["usable"] and rows["overlay"]["usable"]
    assert not rows["btrfs"]["usable"] and "btrfs" in rows["btrfs"]["reason"]
    for r in rows.values():
        assert r["usable"] or r["reason"], r
    # Probing leaves no driver homes that would pin a driver, and no layers/: only the lock
    # file of the shared store lock it probes under and tmp/, where it probed.
    assert sorted(os.listdir(c.root)) == ["lock", "tmp"]
    assert os.listdir(os.path.join(c.root, "tmp")) == []


def test_layer_lifecycle_changes_and_diff_round_trip(cow, workdir):
    base = make_tar([E("etc", "dir"), E("etc/a", data=b"A"), E("etc/b", data=b"B"), E("bin", "dir"),
                     E("bin/sh", data=b"#!", mode=0o755), E("bin/link", "hardlink", link="bin/sh")])
    cow.run("import-layer", "base", "-", input=base, check=True)
    cow.run("create-layer", "--rw", "--parent", "base", "c1", check=True)
    cow.run("create-layer", "--rw", "--parent", "base", "c2", check=True)
    path = cow.run("mount", "c1", check=True).stdout.decode().strip()
    with open(os.path.join(path, "etc/a"), "w") as f:
        f.write("changed")
    os.unlink(os.path.join(path, "etc/b"))
    with open(os.path.join(path, "new"), "w") as f:
        f.write("new file")
    cow.run("unmount", "c1", check=True)
    changes = cow.run("changes", "c1", check=True).stdout.decode().split("\n")
    assert [l for l in changes if l] == ["C /etc", "C /etc/a", "D /etc/b", "A /new"]
    assert cow.run("changes", "c2", check=True).stdout == b""
    # The exported diff applies to a fresh container and reproduces the changes.
    out = os.path.join(workdir, "c1.tar")
    cow.run("diff", "c1", "-o", out, check=True)
    with tarfile.open(out) as t:
        names = t.getnames()
    assert names == sorted(names)
    assert "etc/.wh.b" in names and "new" in names and "etc/a" in names
    cow.run("create-layer", "--rw", "--parent", "base", "c3", check=True)
    with open(out, "rb") as f:
        cow.run("applydiff", "c3", "-", input=f.read(), check=True)
    assert cow.run("changes", "c3", check=True).stdout.decode().split("\n") == changes
    # Reproducible: the same diff twice is byte-identical.
    out2 = os.path.join(workdir, "c1-again.tar")
    cow.run("diff", "c1", "-o", out2, check=True)
    assert open(out, "rb").read() == open(out2, "rb").read()
    size = int(cow.run("diffsize", "c1", check=True).stdout)
    assert size == len("changed") + len("new file")
    layers = {l["id"]: l for l in cow.json("layers")}
    assert set(layers) == {"base", "c1", "c2", "c3"}
    assert layers["c1"]["parent"] == "base" and layers["c1"]["read_write"]
    assert layers["base"]["diff_id"].startswith("sha256:")


def test_utf8_names_import_and_export(cow, workdir, monkeypatch):
    """pax carries names as UTF-8; cowlab runs in the C locale, where libarchive could not convert
    them ("Pathname can't be converted from UTF-8 to current locale") and Debian's own minbase tar
    (ca-certificates' NetLock_..._Főtanúsítvány.pem) was refused.  Linux names are bytes: they
    must come through import and export unchanged."""
    monkeypatch.setenv("LC_ALL", "C")
    name, link, hard = "etc/ssl/Főtanúsítvány.pem", "etc/ssl/ő-link.pem", "etc/ssl/hård.pem"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ("etc", "etc/ssl"):
            i = tarfile.TarInfo(d)
            i.type, i.mode = tarfile.DIRTYPE, 0o755
            t.addfile(i)
        data = b"certificate\n"
        i = tarfile.TarInfo(name)
        i.size = len(data)
        t.addfile(i, io.BytesIO(data))
        i = tarfile.TarInfo(link)
        i.type, i.linkname = tarfile.SYMTYPE, "Főtanúsítvány.pem"
        t.addfile(i)
        i = tarfile.TarInfo(hard)
        i.type, i.linkname = tarfile.LNKTYPE, name
        t.addfile(i)
    r = cow.run("import-layer", "base", "-", input=buf.getvalue())
    assert r.returncode == 0, r.stderr
    cow.run("create-layer", "--rw", "--parent", "base", "c", check=True)
    path = cow.run("mount", "c", check=True).stdout.decode().strip()
    try:
        assert open(os.path.join(path, name), "rb").read() == b"certificate\n"
        assert os.readlink(os.path.join(path, link)) == "Főtanúsítvány.pem"
        assert os.stat(os.path.join(path, hard)).st_ino == os.stat(os.path.join(path, name)).st_ino
        with open(os.path.join(path, "etc/ssl/ünïcode-new"), "w") as f:
            f.write("x")
    finally:
        cow.run("unmount", "c", check=True)
    out = os.path.join(workdir, "c.tar")
    r = cow.run("diff", "c", "-o", out)
    assert r.returncode == 0, r.stderr
    with tarfile.open(out, encoding="utf-8") as t:
        assert "etc/ssl/ünïcode-new" in t.getnames()
    out = os.path.join(workdir, "base.tar")
    r = cow.run("diff", "base", "-o", out)
    assert r.returncode == 0, r.stderr
    with tarfile.open(out, encoding="utf-8") as t:
        names = t.getnames()
        assert {name, link, hard} <= set(names), names
        assert t.getmember(link).linkname == "Főtanúsítvány.pem"


def test_compressed_inputs(cow, workdir):
    import gzip
    import subprocess
    tar = make_tar([E("f", data=b"hello")])
    cow.run("import-layer", "gz", "-", input=gzip.compress(tar), check=True)
    zst = subprocess.run(["zstd", "-q", "-c"], input=tar, capture_output=True, check=True).stdout
    cow.run("import-layer", "zst", "-", input=zst, check=True)
    layers = {l["id"]: l for l in cow.json("layers")}
    assert layers["gz"]["diff_id"] == layers["zst"]["diff_id"]
    assert layers["gz"]["compressed_digest"] != layers["gz"]["diff_id"]


def test_delete_refusals(cow):
    cow.run("create-layer", "a", check=True)
    cow.run("create-layer", "--parent", "a", "b", check=True)
    p = cow.run("delete-layer", "a")
    assert p.returncode == 1 and "child" in p.stderr.decode()
    cow.run("delete-layer", "b", check=True)
    cow.run("delete-layer", "a", check=True)
    assert cow.json("layers") == []
