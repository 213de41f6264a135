"""Offline image import: OCI layouts made by umoci, docker-archive tars made by skopeo (the
legacy per-layer `docker save` form), and the OCI-based `docker save` form of Docker >= 25
(built here from the documented layout, since no Docker engine runs on these machines)."""
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from tarbuild import entry, make_tar

E = entry

LAYER1 = make_tar([E("etc", "dir"), E("etc/os-release", data=b"ID=cowlab\n"), E("bin", "dir"),
                   E("bin/tool", data=b"\x7fELF", mode=0o755)])
LAYER2 = make_tar([E("etc", "dir"), E("etc/.wh.os-release"), E("etc/hostname", data=b"img\n")])


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain(ids):
    c = ids[0]
    for d in ids[1:]:
        c = sha((c + " " + d).encode())
    return c


def build_oci_layout(path, tag="latest"):
    """An OCI image layout written by umoci (a real producer)."""
    subprocess.run(["umoci", "init", "--layout", path], check=True)
    subprocess.run(["umoci", "new", "--image", f"{path}:{tag}"], check=True)
    for i, layer in enumerate([LAYER1, LAYER2]):
        f = os.path.join(os.path.dirname(path), f"layer{i}.tar")
        with open(f, "wb") as fh:
            fh.write(layer)
        subprocess.run(["umoci", "raw", "add-layer", "--image", f"{path}:{tag}", f], check=True)
    return path


def build_docker25_tar(path):
    """`docker save` of Docker >= 25: an OCI layout plus manifest.json and repositories, with
    uncompressed layer blobs (moby tarexport, commits 1e55ace875 / ddd67b2535)."""
    blobs = {}

    def add(data):
        d = sha(data)
        blobs[d] = data
        return d

    diff_ids = [add(LAYER1), add(LAYER2)]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_d = add(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": config_d, "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                                       "size": len(blobs[d])} for d in diff_ids]}).encode()
    manifest_d = add(manifest)
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "digest": manifest_d, "size": len(manifest),
                                       "annotations": {"io.containerd.image.name": "docker.io/library/img:latest",
                                                       "org.opencontainers.image.ref.name": "latest"}}]}).encode()
    legacy = json.dumps([{"Config": "blobs/sha256/" + config_d[7:], "RepoTags": ["img:latest"],
                          "Layers": ["blobs/sha256/" + d[7:] for d in diff_ids]}]).encode()
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index, "manifest.json": legacy,
             "repositories": json.dumps({"img": {"latest": diff_ids[-1][7:]}}).encode()}
    for d, data in blobs.items():
        files["blobs/sha256/" + d[7:]] = data
    with tarfile.open(path, "w") as t:
        for name in ["blobs", "blobs/sha256"]:
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            t.addfile(ti)
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return diff_ids


EXPECTED = [sha(LAYER1), sha(LAYER2)]


def check_imported(cow, result):
    layers = result["layers"]
    assert [l["diff_id"] for l in layers] == EXPECTED
    assert layers[0]["chain_id"] == EXPECTED[0]
    assert layers[1]["chain_id"] == chain(EXPECTED)
    assert layers[1]["id"] == chain(EXPECTED)[7:]
    assert layers[1]["parent"] == layers[0]["id"]
    changes = cow.run("changes", layers[1]["id"], check=True).stdout.decode().split()
    assert changes == ["C", "/etc", "A", "/etc/hostname", "D", "/etc/os-release"]
    assert os.listdir(os.path.join(cow.root, "tmp")) == []


def test_oci_layout_from_umoci(cow, workdir):
    layout = build_oci_layout(os.path.join(workdir, "oci"))
    r = cow.json("import-image", layout)
    assert r["format"] == "oci-layout"
    check_imported(cow, r)
    # The same stack imports once.
    again = cow.json("import-image", layout)
    assert [l["reused"] for l in again["layers"]] == [True, True]
    assert len(cow.json("layers")) == 2


def test_docker_archive_from_skopeo(cow, workdir):
    layout = build_oci_layout(os.path.join(workdir, "oci"))
    archive = os.path.join(workdir, "docker.tar")
    subprocess.run(["skopeo", "--insecure-policy", "copy", f"oci:{layout}:latest",
                    f"docker-archive:{archive}:img:latest"], check=True, capture_output=True)
    r = cow.json("import-image", archive)
    assert r["format"] == "docker-save-legacy"
    assert r["reference"].endswith("img:latest")  # skopeo writes docker.io/library/img:latest
    check_imported(cow, r)


def test_docker25_save_tar(cow, workdir):
    archive = os.path.join(workdir, "docker25.tar")
    build_docker25_tar(archive)
    r = cow.json("import-image", archive)
    assert r["format"] == "docker-save-oci"
    check_imported(cow, r)


def test_corrupt_blob_is_refused_and_nothing_remains(cow, workdir):
    layout = build_oci_layout(os.path.join(workdir, "oci"))
    index = json.load(open(os.path.join(layout, "index.json")))
    manifest_d = index["manifests"][0]["digest"]
    manifest = json.load(open(os.path.join(layout, "blobs/sha256", manifest_d[7:])))
    victim = os.path.join(layout, "blobs/sha256", manifest["layers"][1]["digest"][7:])
    # A valid gzip of the same tar with other bytes: the DiffID still matches, only the blob
    # digest check can catch it.
    import gzip
    replacement = gzip.compress(LAYER2, compresslevel=1, mtime=12345)
    assert sha(replacement) != manifest["layers"][1]["digest"]
    open(victim, "wb").write(replacement)
    p = cow.run("import-image", layout)
    assert p.returncode == 1
    err = p.stderr.decode()
    assert f"blob {manifest['layers'][1]['digest']} has digest {sha(replacement)}" in err, err
    assert cow.json("layers") == []
    assert os.listdir(os.path.join(cow.root, "tmp")) == []


def test_wrong_diff_id_is_refused(cow, workdir):
    archive = os.path.join(workdir, "docker25.tar")
    build_docker25_tar(archive)
    # Rewrite the legacy manifest to point at a config with a wrong DiffID list.
    d = os.path.join(workdir, "x")
    os.mkdir(d)
    with tarfile.open(archive) as t:
        t.extractall(d)
    os.remove(os.path.join(d, "index.json"))
    cfg = json.dumps({"rootfs": {"type": "layers", "diff_ids": [EXPECTED[0], sha(b"other")]}}).encode()
    name = "blobs/sha256/" + sha(cfg)[7:]
    open(os.path.join(d, name), "wb").write(cfg)
    legacy = json.load(open(os.path.join(d, "manifest.json")))
    legacy[0]["Config"] = name
    json.dump(legacy, open(os.path.join(d, "manifest.json"), "w"))
    bad = os.path.join(workdir, "bad.tar")
    with tarfile.open(bad, "w") as t:
        for n in sorted(os.listdir(d)):
            t.add(os.path.join(d, n), arcname=n)
    p = cow.run("import-image", bad)
    assert p.returncode == 1
    assert "DiffID" in p.stderr.decode(), p.stderr
    assert cow.json("layers") == []


def test_not_an_image(cow, workdir):
    p = cow.run("import-image", workdir)
    assert p.returncode == 1
    assert "neither an OCI image layout" in p.stderr.decode()
