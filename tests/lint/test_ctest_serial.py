"""`make test` runs `ctest -j 2` (the top-level CMakeLists.txt says why): every test but the
default profile's image build must hold the cowlab_serial lock, so that no two tests ever run
side by side.  The test list comes from the real build's `ctest --show-only=json-v1`; the checker
is shown to catch a test planted without the lock."""
import copy
import json
import os
import subprocess

import pytest

LOCK = "cowlab_serial"
BESIDE = {"vm-image-default"}


def unserialized(show_only):
    """Names of the tests in a `ctest --show-only=json-v1` document that lack the lock."""
    bad = []
    for test in show_only["tests"]:
        locks = []
        for prop in test.get("properties", []):
            if prop["name"] == "RESOURCE_LOCK":
                locks = prop["value"]
        if test["name"] not in BESIDE and LOCK not in locks:
            bad.append(test["name"])
    return bad


@pytest.fixture(scope="module")
def show_only():
    build = os.environ.get("COWLAB_BUILD_DIR")
    if not build:
        pytest.skip("COWLAB_BUILD_DIR is not set (ctest sets it; run through ctest -R one-way-lint)")
    out = subprocess.run(["ctest", "--test-dir", build, "--show-only=json-v1"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_every_test_but_the_image_build_holds_the_lock(show_only):
    names = {t["name"] for t in show_only["tests"]}
    # The list is the real one: the heavy entries and the discovered gtests are all in it.
    assert {"unit", "host-cli", "vm-guests", "vm-image-default"} <= names
    assert any(n.startswith("Compare.") for n in names)
    assert unserialized(show_only) == []


def test_the_check_catches_a_test_without_the_lock(show_only):
    planted = copy.deepcopy(show_only)
    victim = next(t for t in planted["tests"] if t["name"] == "vm-guests")
    victim["properties"] = [p for p in victim["properties"] if p["name"] != "RESOURCE_LOCK"]
    assert unserialized(planted) == ["vm-guests"]
