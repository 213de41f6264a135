"""The one-way source scan (one_way.py): the tree is clean, and each rule catches a violation
planted in a copy of the real tree (and ignores the same words in comments and strings)."""
import pathlib
import shutil
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import one_way  # noqa: E402

# rule -> (file to plant into, planted line)
PLANTS = {
    "spawn": [
        ("drivers/scenario/backing.cpp", 'static int planted() { return std::system("true"); }'),
        ("harness/src/guest.cpp", 'static void* planted() { return popen("true", "r"); }'),
        ("drivers/core/layer_store.cpp", "#include <boost/process/child.hpp>"),
        ("harness/src/bisect.cpp", 'static void planted(char** a) { ::execvp(a[0], a); }'),
        ("drivers/zfs/zfs_test.cpp", "static int planted(pid_t* p, char** a) { return posix_spawnp(p, a[0], 0, 0, a, 0); }"),
    ],
    "stderr": [
        ("drivers/devicemapper/device_set.cpp", 'static void planted() { std::fprintf(stderr, "x\\n"); }'),
        ("harness/src/compare.cpp", 'static void planted() { std::cerr << "x" << std::endl; }'),
        ("drivers/cli/app.cpp", 'static void planted() { std::fputs("x\\n", stderr); }'),
    ],
    "fork": [
        ("drivers/scenario/run.cpp", "static pid_t planted() { return ::fork(); }"),
        ("drivers/core/apply_test.cpp", "static pid_t planted() { return vfork(); }"),
    ],
}


def copy_tree(tmp):
    for d in one_way.SCANNED_DIRS:
        src = ROOT / d
        if src.is_dir():
            shutil.copytree(src, tmp / d, ignore=shutil.ignore_patterns("build*", "__pycache__", "corpus"))
    return tmp


def run(root):
    return subprocess.run([sys.executable, str(HERE / "one_way.py"), str(root)],
                          capture_output=True, text=True)


def test_tree_is_clean():
    r = run(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("rule,file,line", [(r, f, l) for r, plants in PLANTS.items() for f, l in plants])
def test_catches_planted_violation(tmp_path, rule, file, line):
    tree = copy_tree(tmp_path)
    target = tree / file
    lineno = target.read_text().count("\n") + 1
    with target.open("a") as f:
        f.write(line + "\n")
    r = run(tree)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.splitlines() == [l for l in r.stdout.splitlines() if l.startswith(f"{file}:{lineno}: {rule}: ")], r.stdout
    assert r.stdout.startswith(f"{file}:{lineno}: {rule}: "), r.stdout


def test_stderr_rule_leaves_test_programs_alone(tmp_path):
    tree = copy_tree(tmp_path)
    with (tree / "drivers/core/apply_test.cpp").open("a") as f:
        f.write('static void planted() { std::fprintf(stderr, "x\\n"); }\n')
    r = run(tree)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("rule", sorted(PLANTS))
def test_allowed_file_and_comments_and_strings_are_not_hits(tmp_path, rule):
    (allowed,) = next(r.allowed for r in one_way.RULES if r.name == rule)
    f = tmp_path / allowed
    f.parent.mkdir(parents=True)
    snippet = PLANTS[rule][0][1]
    f.write_text(snippet + "\n")
    other = tmp_path / "drivers/core/other.cpp"
    other.parent.mkdir(parents=True, exist_ok=True)
    quoted = snippet.replace("\\", "\\\\").replace('"', '\\"')
    other.write_text(f"// {snippet}\n/* {snippet} */\nconst char* s = \"{quoted}\";\n"
                     f"const char* r = R\"x({snippet})x\";\n")
    r = run(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
