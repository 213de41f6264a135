"""Writes the host security corpus (tests/host/test_security.py CASES, plus its malformed tars)
as files, for the guest driver suites: the guest root has no Python, so the tars are built here
and the guest script (guest_driver_suites.sh) feeds them to `cowlab import-layer` and
`cowlab applydiff`.

usage: security_tars.py OUTDIR   ->  OUTDIR/escape-<case>.tar, OUTDIR/malformed-<case>.tar
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "host"))

from tarbuild import entry, make_tar  # noqa: E402
from test_security import CASES  # noqa: E402


def main(out):
    os.makedirs(out, exist_ok=True)
    for name, entries in sorted(CASES.items()):
        with open(os.path.join(out, f"escape-{name}.tar"), "wb") as f:
            f.write(make_tar(entries))
    good = make_tar([entry("a", data=b"x" * 5000)])
    malformed = {
        "garbage": b"\x01" * 4096,
        "truncated": good[:1024],
        "bad-checksum": good[:148] + b"99999999" + good[156:],
    }
    for name, data in malformed.items():
        with open(os.path.join(out, f"malformed-{name}.tar"), "wb") as f:
            f.write(data)
    print(f"{len(CASES)} escape and {len(malformed)} malformed tars in {out}")


if __name__ == "__main__":
    main(sys.argv[1])
