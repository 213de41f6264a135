"""Builds layer tars for tests with Python's tarfile (header-only where bodies don't matter)."""
import io
import tarfile


def entry(name, type="file", data=b"", mode=None, link="", uid=0, gid=0, mtime=1700000000,
          devmajor=0, devminor=0, pax=None):
    return dict(name=name, type=type, data=data, mode=mode, link=link, uid=uid, gid=gid,
                mtime=mtime, devmajor=devmajor, devminor=devminor, pax=pax or {})


TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE,
         "block": tarfile.BLKTYPE}


def make_tar(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            ti = tarfile.TarInfo(e["name"])
            ti.type = TYPES[e["type"]]
            ti.mode = e["mode"] if e["mode"] is not None else (0o755 if e["type"] == "dir" else 0o644)
            ti.uid, ti.gid, ti.mtime = e["uid"], e["gid"], e["mtime"]
            ti.linkname = e["link"]
            ti.devmajor, ti.devminor = e["devmajor"], e["devminor"]
            if e["pax"]:
                ti.pax_headers = e["pax"]
            data = e["data"] if e["type"] == "file" else b""
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()
