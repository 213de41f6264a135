"""The documentation points at files that exist (issue 14: docs/aufs.md named tests/vm/aufs_suite.sh
and facts.md, neither of which was in the repository)."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOP = ("drivers/", "harness/", "tests/", "vm-images/", "scenarios/", "bench/", "docs/")


def referenced_paths(text):
    for m in re.finditer(r"`([A-Za-z0-9_./-]+)`", text):
        p = m.group(1).rstrip("/.")
        if p.startswith(TOP) and "*" not in p and not re.search(r"\b[A-Z]{3,}\b", p):  # NAME, DIR: placeholders
            yield p


def missing_in(text):
    return [p for p in referenced_paths(text) if not os.path.exists(os.path.join(REPO, p))]


def test_docs_reference_existing_files():
    bad = {}
    for name in sorted(os.listdir(os.path.join(REPO, "docs"))) + ["../README.md"]:
        path = os.path.join(REPO, "docs", name)
        if name.endswith(".md"):
            missing = missing_in(open(path).read())
            if missing:
                bad[name] = missing
    assert bad == {}


def test_the_check_catches_a_missing_file():
    assert missing_in("The suites (`tests/vm/aufs_suite.sh`) and `docs/vm.md`") == ["tests/vm/aufs_suite.sh"]
