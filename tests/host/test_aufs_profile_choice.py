"""Which aufs kernel the aufs guest tests use (tests/vm/conftest.py: vm-aufs-suites,
test_crash_aufs, vm-aufs-export; docs/aufs.md).

A profile built by `cowlab kernel build --profile aufs` must be used as it is: before, the suites
ran only with COWLAB_AUFS_KERNEL set (skipped otherwise, though the profile was built), and setting
it to that profile's own bzImage repackaged it with `vm build --profile aufs --kernel K` as a
bring-your-own profile, dropping its source record.  COWLAB_AUFS_KERNEL, when set, still wins.
The `cowlab` here is a stand-in script that answers `vm profiles` and records every call."""
import importlib.util
import json
import os
import stat

import pytest

VM_CONFTEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vm", "conftest.py")


def load_vm_conftest():
    spec = importlib.util.spec_from_file_location("vm_conftest_under_test", VM_CONFTEST)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A stand-in cowlab: `vm profiles --profile aufs` prints the entry in $FAKE_ENTRY (exit 1
    when it is empty, as for an unknown profile); every call is appended to calls.log."""
    log = tmp_path / "calls.log"
    script = tmp_path / "cowlab"
    script.write_text('#!/bin/sh\n'
                      f'echo "$*" >> {log}\n'
                      'case "$*" in\n'
                      '  "vm profiles "*) [ -n "$FAKE_ENTRY" ] || exit 1; echo "[$FAKE_ENTRY]";;\n'
                      'esac\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    mod = load_vm_conftest()
    monkeypatch.setattr(mod, "COWLAB", str(script))
    monkeypatch.delenv("COWLAB_AUFS_KERNEL", raising=False)
    monkeypatch.delenv("COWLAB_AUFS_MODULES", raising=False)

    def calls():
        return log.read_text().splitlines() if log.exists() else []
    return mod, calls


def entry(built, runnable):
    return json.dumps({"name": "aufs", "built": built,
                       "drivers": {"aufs": {"runnable": runnable, "reason": "" if runnable else "aufs: no aufs"}}})


def test_built_aufs_profile_is_used_as_it_is(fake, monkeypatch):
    mod, calls = fake
    monkeypatch.setenv("FAKE_ENTRY", entry(True, True))
    assert mod.aufs_kernel_args() == []  # not None: the suites run
    assert mod.require_aufs_kernel() == []
    assert not [c for c in calls() if c.startswith("vm build")], calls()


@pytest.mark.parametrize("built,runnable", [(False, False), (True, False)])
def test_no_usable_profile_and_no_kernel_skips_saying_why(fake, monkeypatch, capsys, built, runnable):
    mod, calls = fake
    monkeypatch.setenv("FAKE_ENTRY", entry(built, runnable))
    with pytest.raises(pytest.skip.Exception):
        mod.require_aufs_kernel()
    assert "skipped: no aufs kernel configured" in capsys.readouterr().out


def test_unknown_profile_and_no_kernel_skips(fake, monkeypatch):
    mod, calls = fake
    monkeypatch.setenv("FAKE_ENTRY", "")
    assert mod.aufs_kernel_args() is None


def test_cowlab_aufs_kernel_still_builds_the_byo_profile(fake, monkeypatch):
    mod, calls = fake
    monkeypatch.setenv("FAKE_ENTRY", entry(True, True))
    monkeypatch.setenv("COWLAB_AUFS_KERNEL", "/k/bzImage")
    assert mod.require_aufs_kernel() == ["--kernel", "/k/bzImage"]
    assert "vm build --profile aufs --kernel /k/bzImage" in calls(), calls()
