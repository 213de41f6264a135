"""The breakout corpus of Docker's pkg/archive tests (testBreakout and friends), run through
both import paths of the CLI (`import-layer` and `applydiff`) on every host driver.  A
victim directory outside the store root must stay byte-for-byte identical, the refusal must
name the entry, and the layer must not exist (import) or be unchanged (applydiff)."""
import hashlib
import os

import pytest

from tarbuild import entry, make_tar

E = entry

# name -> header list; every case must be refused (Docker allows "breakout error or no
# effect"; cowlab is stricter: every case is a refusal naming the entry).
CASES = {
    # TestUntarInvalidFilenames
    "dotdot-name": [E("../victim/dotdot")],
    "slash-dotdot-name": [E("/../victim/slash-dotdot")],
    # TestUntarInvalidHardlink
    "hardlink-dotdot": [E("dotdot", "hardlink", link="../victim/hello")],
    "hardlink-slash-dotdot": [E("slash-dotdot", "hardlink", link="/../victim/hello")],
    "hardlink-then-write": [E("loophole-victim", "hardlink", link="../victim"),
                            E("loophole-victim/file")],
    "hardlink-then-symlink": [E("loophole-victim", "hardlink", link="../victim"),
                              E("symlink", "symlink", link="loophole-victim/hello")],
    "hardlink-then-hardlink": [E("loophole-victim", "hardlink", link="../victim"),
                               E("hardlink", "hardlink", link="loophole-victim/hello")],
    "hardlink-then-replace": [E("loophole-victim", "hardlink", link="../victim"),
                              E("loophole-victim")],
    # TestUntarInvalidSymlink
    "symlink-dotdot": [E("dotdot", "symlink", link="../victim/hello")],
    "symlink-then-write": [E("loophole-victim", "symlink", link="../victim"),
                           E("loophole-victim/file")],
    "symlink-then-symlink": [E("loophole-victim", "symlink", link="../victim"),
                             E("symlink", "symlink", link="loophole-victim/hello")],
    "symlink-then-hardlink": [E("loophole-victim", "symlink", link="../victim"),
                              E("hardlink", "hardlink", link="loophole-victim/hello")],
    "symlink-then-replace": [E("loophole-victim", "symlink", link="../victim"),
                             E("loophole-victim")],
    "symlink-loophole-dir": [E("dir", "dir"), E("dir/loophole", "symlink", link="../../victim"),
                             E("dir/loophole/newdir", "dir"), E("dir/loophole/newdir/newfile")],
    # A symlink pointing inside the layer followed by a write through it (same tar).
    "write-through-inner-symlink": [E("real", "dir"), E("alias", "symlink", link="real"),
                                    E("alias/file", data=b"through")],
    # A hard link followed by a write through its name as a directory.
    "write-through-hardlink": [E("f", data=b"x"), E("g", "hardlink", link="f"), E("g/h")],
}


def snapshot(path):
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            data = b""
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    data = f.read()
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, hashlib.sha256(data).hexdigest())
    return out


@pytest.fixture
def victim(workdir):
    v = os.path.join(workdir, "victim")
    os.mkdir(v)
    with open(os.path.join(v, "hello"), "wb") as f:
        f.write(b"victim content 2026-11-29T00:00:00Z")
    os.chmod(os.path.join(v, "hello"), 0o644)
    before = snapshot(v)
    yield v
    assert snapshot(v) == before, "the victim outside the store root was changed"


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_layer_refuses(cow, victim, case, tmp_path):
    # The store root is <workdir>/root; "../victim" from a layer dir would need several
    # levels, so every escape here is also checked lexically — nothing may be created.
    home = os.path.join(cow.root, cow.driver)
    cow.run("layers", check=True)  # opens the store: the driver's home exists from here on
    before = sorted(os.listdir(home))
    tar = make_tar(CASES[case])
    p = cow.run("import-layer", "evil", "-", input=tar)
    assert p.returncode == 1, (case, p.stderr)
    err = p.stderr.decode()
    assert "import-layer evil" in err, err
    assert cow.run("exists", "evil").returncode == 1
    # Nothing of the layer remains in the driver's home, nor in the store's staging area.
    assert sorted(os.listdir(home)) == before
    assert os.listdir(os.path.join(cow.root, "tmp")) == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_applydiff_refuses(cow, victim, case):
    cow.run("create-layer", "--rw", "c", check=True)
    before = cow.run("changes", "--parent", "", "c", check=True).stdout
    tar = make_tar(CASES[case])
    p = cow.run("applydiff", "c", "-", input=tar)
    assert p.returncode == 1, (case, p.stderr)
    assert "apply-diff layer c" in p.stderr.decode()
    assert cow.run("changes", "--parent", "", "c", check=True).stdout == before


def test_dotdot_prefixed_name_is_fine(cow):
    # TestChrootApplyDotDotFile: "..gitme" is a legal name.
    tar = make_tar([E("..gitme", data=b"ok")])
    cow.run("import-layer", "lay", "-", input=tar, check=True)
    out = cow.run("changes", "--parent", "", "lay", check=True).stdout.decode()
    assert "A /..gitme" in out


def test_pax_global_header_creates_nothing(cow):
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as t:
        ti = tarfile.TarInfo("file")
        t.addfile(ti)
    cow.run("import-layer", "lay", "-", input=buf.getvalue(), check=True)
    out = cow.run("changes", "--parent", "", "lay", check=True).stdout.decode().split("\n")
    assert [l for l in out if l] == ["A /file"]


def test_malformed_tars_are_clear_errors(cow):
    good = make_tar([E("a", data=b"x" * 5000)])
    cases = {
        "garbage": b"\x01" * 4096,
        "truncated": good[:1024],
        "bad-checksum": good[:148] + b"99999999" + good[156:],
    }
    for name, data in cases.items():
        p = cow.run("import-layer", "bad", "-", input=data)
        assert p.returncode == 1, name
        assert p.stderr.decode().startswith("cowlab: import-layer bad"), (name, p.stderr)
        assert cow.run("exists", "bad").returncode == 1
