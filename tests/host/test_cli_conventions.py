"""Command-line conventions (issue 14): one app listing every command, git-style unknown-command
errors, `cowlab help`, --version with the git commit, --json anywhere, one JSON key style,
Docker's overlay2 name, exit 2 for usage errors, messages said once, the global --driver in
`scenario run`, and what an unprivileged user sees."""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import COWLAB, Cowlab

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PASS_SIMPLE = os.path.join(REPO, "tests", "matrix", "scenarios", "pass-simple.yaml")


def cowlab(*args, user=None, env=None, binary=COWLAB, timeout=600):
    cmd = [binary, *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def help_text(*words):
    rc, out, err = cowlab(*words, "--help")
    assert rc == 0, (words, err)
    return out


def test_help_lists_every_command():
    out = help_text()
    for cmd in ["info", "layers", "create-layer", "import-layer", "applydiff", "diff", "changes", "diffsize",
                "mount", "unmount", "exists", "delete-layer", "wipe", "import-image", "scenario", "crash", "vm", "matrix",
                "help"]:
        assert re.search(rf"^\s+{re.escape(cmd)}\s", out, re.M), f"{cmd} missing from cowlab --help:\n{out}"
    for opt in ["--json", "--driver", "--root", "--version", "-v", "-q"]:
        assert opt in out


@pytest.mark.parametrize("argv,word,suggestion,where", [
    (["infoo"], "infoo", "info", "cowlab"),
    (["vm", "buidl"], "buidl", "build", "cowlab vm"),
    (["scenario", "rnu", "x.yaml"], "rnu", "run", "cowlab scenario"),
    (["--json", "layer"], "layer", "layers", "cowlab"),
])
def test_unknown_command_suggests_the_closest(argv, word, suggestion, where):
    rc, out, err = cowlab(*argv)
    assert rc == 2, err
    assert f"{where}: unknown command '{word}' \u2014 did you mean '{suggestion}'?" in err, err
    assert "A subcommand is required" not in err


def test_unknown_command_without_a_close_one_lists_the_commands():
    rc, _, err = cowlab("frobnicate")
    assert rc == 2
    assert "unknown command 'frobnicate'" in err and "did you mean" not in err
    assert "info" in err and "matrix" in err  # the list of commands


def test_missing_command_is_a_usage_error_naming_the_choices():
    for argv, choices in [([], ["info", "vm"]), (["vm"], ["build", "run"]), (["scenario"], ["check", "run"])]:
        rc, _, err = cowlab(*argv)
        assert rc == 2, argv
        assert "a command is required" in err and all(c in err for c in choices), err


def test_help_command():
    rc, out, _ = cowlab("help")
    assert rc == 0 and "matrix" in out and "vm" in out
    rc, out, _ = cowlab("help", "vm", "run")
    assert rc == 0 and "--boot-timeout" in out
    rc, _, err = cowlab("help", "vm", "rnu")
    assert rc == 2 and "did you mean 'run'?" in err


def test_version_names_the_git_commit_of_the_build():
    rc, out, _ = cowlab("--version")
    assert rc == 0
    m = re.fullmatch(r"cowlab \d+\.\d+\.\d+ \(git ([0-9a-f]{12})(-dirty)?\)\n", out)
    assert m, out
    # The binary under test was built from this checkout (CI: a fresh clone of main).
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert m.group(1) == head.stdout.strip()
    else:
        print(f"not a git checkout ({head.stderr.strip()}): commit not compared")


def test_json_before_or_after_the_command(workdir):
    c = Cowlab(os.path.join(workdir, "r"), "vfs")
    before = c.run("--json", "info", check=True).stdout
    after = c.run("info", "--json", check=True).stdout
    assert json.loads(before) == json.loads(after)
    rc, out, err = cowlab("--root", c.root, "--driver", "vfs", "layers", "--json")
    assert rc == 0 and json.loads(out) == [], err


# Maps whose keys are data (package names, capability names, measurement names), not fields.
DATA_MAPS = {"versions", "capabilities", "measurements", "sweep"}


def snake_case_violations(value, path="$"):
    bad = []
    if isinstance(value, dict):
        for k, v in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", k):
                bad.append(f"{path}.{k}")
            if k not in DATA_MAPS:
                bad += snake_case_violations(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            bad += snake_case_violations(v, f"{path}[{i}]")
    return bad


def test_every_json_output_uses_snake_case_keys(workdir):
    from tarbuild import entry, make_tar
    c = Cowlab(os.path.join(workdir, "r"), "vfs")
    c.run("import-layer", "base", "-", input=make_tar([entry("f", data=b"x")]), check=True)
    outputs = {
        "info": c.json("info"),
        "info --all": c.json("info", "--all"),
        "layers": c.json("layers"),
        "create-layer": c.json("create-layer", "--rw", "--parent", "base", "c1"),
        "changes": c.json("changes", "c1"),
        "diffsize": c.json("diffsize", "c1"),
        "exists": c.json("exists", "c1"),
        "mount": c.json("mount", "c1"),
    }
    c.run("unmount", "c1", check=True)
    rc, out, err = cowlab("--json", "vm", "profiles", "--no-probe")
    assert rc in (0, 1), err  # 1: a built profile's cached capabilities are missing
    outputs["vm profiles"] = json.loads(out)
    for name, value in outputs.items():
        assert snake_case_violations(value) == [], f"{name}: {snake_case_violations(value)}"
    # The checker itself catches Docker-style keys.
    assert snake_case_violations({"Driver": "vfs", "driver_status": [{"Root": 1}]}) == ["$.Driver",
                                                                                          "$.driver_status[0].Root"]


def test_overlay2_is_accepted_as_dockers_name(workdir):
    c = Cowlab(os.path.join(workdir, "r"), "overlay2")
    out = c.run("info", check=True).stdout.decode().splitlines()
    assert out[0] == " Storage Driver: overlay"


@pytest.mark.parametrize("argv", [
    ["--driver", "nosuch", "info"],
    ["info", "--driver", "nosuch"],
    ["--driver", "nosuch", "scenario", "run", PASS_SIMPLE],
    ["scenario", "run", "--driver", "vfs,nosuch", PASS_SIMPLE],
    ["matrix", "--drivers", "nosuch", PASS_SIMPLE],
])
def test_unknown_driver_is_a_usage_error_listing_the_valid_names(argv, workdir):
    rc, out, err = cowlab("--root", os.path.join(workdir, "r"), *argv)
    assert rc == 2, err
    assert '"nosuch"' in err
    assert "aufs, btrfs, devicemapper, overlay (or overlay2), vfs, zfs" in err, err
    assert out == ""


def doubled_prefix(text):
    """'cowlab matrix: matrix: x' or 'driver btrfs: btrfs: x': a word said twice as a prefix."""
    return re.search(r"\b([\w-]+): (?:[\w-]+ )?\1: ", text) or re.search(r"\b([\w-]+) \1: ", text)


def test_doubled_prefix_checker_catches_the_old_messages():
    assert doubled_prefix("cowlab matrix: matrix: unknown driver \"x\"")
    assert doubled_prefix("cowlab: driver btrfs: btrfs: unknown option")
    assert not doubled_prefix("cowlab: driver btrfs: unknown option btrfs.x")


@pytest.mark.parametrize("argv", [
    ["matrix", "--drivers", "nosuch", PASS_SIMPLE],
    ["matrix", "--shard", "3/2", PASS_SIMPLE],
    ["--driver", "vfs", "--storage-opt", "vfs.bogus=1", "info"],
    ["--driver", "overlay", "--storage-opt", "overlay.bogus=1", "info"],
    ["--driver", "btrfs", "info"],
    ["--driver", "nosuch", "info"],
])
def test_messages_say_each_prefix_once(argv, workdir):
    rc, _, err = cowlab("--root", os.path.join(workdir, "r"), *argv)
    assert rc != 0
    assert not doubled_prefix(err), err


def test_global_driver_selects_the_scenario_drivers(workdir):
    for argv in (["--driver", "vfs", "scenario", "run"], ["scenario", "run", "--driver", "vfs"]):
        rc, out, err = cowlab("--root", os.path.join(workdir, "r"), *argv, "--work-dir", workdir, PASS_SIMPLE)
        assert rc == 0, err
        drivers = {json.loads(l)["driver"] for l in out.splitlines() if l.strip()}
        assert drivers == {"vfs"}, (argv, drivers)


def unprivileged_copy(workdir):
    """The binary where user nobody can run it (the build tree may sit below a 0700 directory)."""
    os.chmod(workdir, 0o755)
    binary = os.path.join(workdir, "cowlab")
    shutil.copy(COWLAB, binary)
    os.chmod(binary, 0o755)
    return binary


def test_non_root_info_says_what_to_do(workdir):
    binary = unprivileged_copy(workdir)
    rc, _, err = cowlab("--root", os.path.join(workdir, "store"), "info", user="nobody", binary=binary)
    assert rc == 1
    assert "EACCES" in err
    assert "hint:" in err and "--root DIR" in err and "as root" in err, err


def test_non_root_auto_selection_moves_past_a_refused_probe(workdir):
    binary = unprivileged_copy(workdir)
    store = os.path.join(workdir, "mine")
    os.mkdir(store)
    shutil.chown(store, "nobody", "nogroup")
    rc, out, err = cowlab("--root", store, "info", user="nobody", binary=binary)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == " Storage Driver: vfs"
    overlay = [l for l in lines if l.startswith(" Skipped overlay:")]
    assert overlay and ("EPERM" in overlay[0] or "EACCES" in overlay[0]), out


OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def option_names(*words):
    """The options a command accepts, from the option column of its --help (and the globals)."""
    names = set()
    for text in (help_text(*words), help_text()):
        for line in text.splitlines():
            m = re.match(r"\s+((?:-{1,2}[\w-]+)(?:,-{1,2}[\w-]+)*)\b", line)
            if m:
                names.update(m.group(1).split(","))
    return names


def mentioned_options_exist(message, invoked):
    """Every --option a message suggests is accepted by the command it names (`cowlab vm build
    --kernel ...`) or, if it names none, by the command that printed it."""
    missing = []
    for m in OPTION.finditer(message):
        opt = m.group(1)
        before = message[:m.start()]
        at = before.rfind("cowlab ")
        segment = before[at + len("cowlab "):] if at >= 0 else ""
        words = invoked
        if at >= 0 and not re.search(r"[;()]", segment):  # still inside that command line
            words = []
            for w in segment.split():
                if not re.fullmatch(r"[a-z][a-z-]*", w):
                    break
                words.append(w)
        if opt not in option_names(*words):
            missing.append((opt, words))
    return missing


def test_suggested_options_exist():
    rc, _, err = cowlab("matrix", "--profiles", "no-such-profile", PASS_SIMPLE)
    assert rc != 0 and "no-such-profile" in err
    assert "--" in err  # it does suggest something
    assert mentioned_options_exist(err, ["matrix"]) == [], err
    # The checker catches the old suggestion: matrix has no --kernel.
    assert mentioned_options_exist("profile 'x': unknown; or give --kernel PATH", ["matrix"]) == [
        ("--kernel", ["matrix"])]


# Diagnostics go through the one logger (issue 14): -q leaves warnings and errors only, so a
# progress line goes and the final error stays; -v adds debug lines, e.g. every program cowlab
# starts.  Before, such lines were fprintf(stderr) and ignored both flags.
def test_quiet_hides_progress_and_keeps_the_final_error(workdir):
    root = os.path.join(workdir, "r")
    rc, _, err = cowlab("--root", root, "--driver", "vfs", "layers")
    assert rc == 0, err
    holder = subprocess.Popen(["flock", "-x", os.path.join(root, "lock"), "sleep", "60"])
    try:
        time.sleep(0.5)
        args = ("--root", root, "--driver", "vfs", "--lock-timeout", "2.5", "layers")
        rc, _, err = cowlab(*args)
        progress = re.compile(r"^cowlab: waiting for the store lock held by PID", re.M)
        assert rc == 1 and progress.search(err), err
        rc, _, err = cowlab("-q", *args)
        assert rc == 1, err
        assert not progress.search(err), err
        assert "timed out after 2.5s" in err, err
    finally:
        holder.kill()
        holder.wait()


def test_verbose_shows_every_program_started(workdir):
    args = ("--root", os.path.join(workdir, "r"), "scenario", "run", "--driver", "vfs", "--work-dir", workdir,
            PASS_SIMPLE)
    rc, _, err = cowlab(*args)
    assert rc == 0, err
    assert "cowlab: run: " not in err, err
    rc, out, err = cowlab("-v", *args)
    assert rc == 0, err
    assert re.search(r"^cowlab: run: mkfs\.ext4 -q -F ", err, re.M), err
    assert json.loads(out.splitlines()[0])["status"] == "pass"  # stdout keeps the results only


def test_scenario_run_needs_files_or_a_queue(workdir):
    rc, out, err = cowlab("--root", os.path.join(workdir, "r"), "scenario", "run", "--driver", "vfs")
    assert rc == 2, err
    assert "no scenario FILES and no --queue" in err, err
    assert out == ""
    missing = os.path.join(workdir, "no-such-queue")
    rc, out, err = cowlab("--root", os.path.join(workdir, "r"), "scenario", "run", "--driver", "vfs",
                          "--queue", missing)
    assert rc == 1, err
    assert "--queue" in err and missing in err and "No such file" in err, err
    assert out == ""


def test_scenario_run_takes_each_scenario_from_its_queue_only_after_asking(workdir):
    """The matrix's guests take their work one scenario at a time (docs/matrix.md, "Scheduling"):
    the runner writes {"event":"next"} and waits for the answer; an empty line ends the run."""
    queue, out = os.path.join(workdir, "queue"), os.path.join(workdir, "out.jsonl")
    os.mkfifo(queue)
    second = os.path.join(REPO, "scenarios", "basic", "symlinks.yaml")
    p = subprocess.Popen([COWLAB, "--root", os.path.join(workdir, "r"), "scenario", "run", "--driver", "vfs",
                          "--work-dir", workdir, "--out", out, "--queue", queue],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def lines():
        try:
            return [json.loads(l) for l in open(out) if l.strip()]
        except FileNotFoundError:
            return []

    def wait_for_requests(n):
        deadline = time.monotonic() + 120
        while sum(1 for l in lines() if l.get("event") == "next") < n:
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, lines()
            time.sleep(0.05)

    with open(queue, "w") as q:
        for n, answer in enumerate([PASS_SIMPLE, second, ""], start=1):
            wait_for_requests(n)
            time.sleep(0.3)  # a runner that read on without asking would show it here
            got = lines()
            # One request per scenario handed out, the last one unanswered so far.
            assert sum(1 for l in got if l.get("event") == "next") == n, got
            assert sum(1 for l in got if "status" in l) == n - 1, got
            q.write(answer + "\n")
            q.flush()
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    got = lines()
    assert [l.get("event") or os.path.basename(l["file"]) for l in got] == [
        "next", "pass-simple.yaml", "next", "symlinks.yaml", "next"], got
    assert all(l["status"] == "pass" for l in got if "status" in l), got
