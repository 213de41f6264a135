#!/usr/bin/env python3
"""One way to do each thing (issue 14): a source scan of the C++ tree.

Each rule names a kind of call and the one file allowed to make it; anywhere else it is a
violation.  Comments and string literals are blanked out first, so a comment saying "fork()" or
a message saying "exec" is not a hit.

    one_way.py [ROOT]      exit 0: clean; exit 1: one line per violation (file:line: rule: why)
"""
import pathlib
import re
import sys

SCANNED_DIRS = ("drivers", "harness", "tests", "bench")
SUFFIXES = (".cpp", ".cc", ".h", ".hpp")


class Rule:
    def __init__(self, name, pattern, allowed, why, scope=None):
        self.name = name
        self.pattern = re.compile(pattern)
        self.allowed = set(allowed)
        self.why = why
        # scope(relative_path) -> bool: whether the rule applies to that file at all.
        self.scope = scope or (lambda rel: True)


RULES = [
    Rule(
        "spawn",
        r"(?<![\w.>])(?:execv|execvp|execvpe|execve|execveat|fexecve|execl|execlp|execle|"
        r"posix_spawnp?|popen|system)\s*\(|boost/process|boost::process",
        ["drivers/sys/spawn.cpp"],
        "programs are started only by sys::run / sys::Subprocess (cowlab/sys_process.h, "
        "Boost.Process in drivers/sys/spawn.cpp)",
    ),
    Rule(
        "fork",
        r"(?<![\w.>])v?fork\s*\(",
        ["drivers/sys/fork.cpp"],
        "forked workers are made only by sys::fork_child (cowlab/sys_process.h, "
        "drivers/sys/fork.cpp)",
    ),
    Rule(
        "stderr",
        r"\bfprintf\s*\(\s*stderr|\b(?:fputs|fputc|fwrite|vfprintf)\s*\([^;]*\bstderr\s*\)|"
        r"std::(?:cerr|clog)\b|(?<![\w.>])perror\s*\(|\bdprintf\s*\(\s*(?:2|STDERR_FILENO)\b",
        ["drivers/core/log.cpp"],
        "diagnostics and error messages go through the spdlog logger (cowlab/log.h), so -q and -v "
        "apply to them; command output goes to stdout",
        # The product: test programs and fuzz drivers print what they like.
        scope=lambda rel: rel.startswith(("drivers/", "harness/"))
        and not rel.endswith("_test.cpp")
        and not rel.startswith("harness/tests/"),
    ),
]


def strip_comments_and_strings(text):
    """Blanks comments, string and character literals (raw strings too), keeping newlines."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return "".join("\n" if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(blank(text[i:j]))
            i = j
        elif c == "R" and text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^(\s\\]{0,16})\(', text[i:])
            if not m:
                out.append(c)
                i += 1
                continue
            end = ")" + m.group(1) + '"'
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(blank(text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(blank(text[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def sources(root):
    for d in SCANNED_DIRS:
        base = root / d
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if p.suffix in SUFFIXES and p.is_file():
                yield p


def check(root, rules=RULES):
    root = pathlib.Path(root)
    violations = []
    for path in sources(root):
        rel = path.relative_to(root).as_posix()
        code = None
        for rule in rules:
            if rel in rule.allowed or not rule.scope(rel):
                continue
            if code is None:
                code = strip_comments_and_strings(path.read_text(errors="replace"))
            for m in rule.pattern.finditer(code):
                line = code.count("\n", 0, m.start()) + 1
                violations.append(f"{rel}:{line}: {rule.name}: '{m.group(0).strip()}': {rule.why}")
    return violations


def main(argv):
    root = pathlib.Path(argv[1] if len(argv) > 1 else pathlib.Path(__file__).resolve().parents[2])
    if not (root / "drivers").is_dir():
        print(f"one_way.py: {root}: not a cowlab source tree (no drivers/)", file=sys.stderr)
        return 2
    violations = check(root)
    for v in violations:
        print(v)
    if violations:
        print(f"one_way.py: {len(violations)} violation(s) in {root}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
