"""Kill-at-random-points for every mutating command (issue 11): each op runs either with
COWLAB_TEST_KILL_AT=<named step> (every window of the intent/commit scheme) or is SIGKILLed
after a random delay; after each kill the store must pass the consistency check.  Seeds are
fixed and printed: COWLAB_KILL_SEED replays one."""
import os
import random
import signal
import subprocess
import time

from conftest import layer_tar

SEED = int(os.environ.get("COWLAB_KILL_SEED", "2222"))
KILLS = int(os.environ.get("COWLAB_KILLS", "70"))
POINTS = {
    "create-layer": ["create:recorded"],
    "import-layer": ["import:recorded", "import:applied"],
    "applydiff": ["applydiff:intent", "applydiff:staged", "applydiff:committed"],
    "mount": ["mount:intent", "mount:mounted"],
    "unmount": ["unmount:intent", "unmount:unmounted"],
    "delete-layer": ["delete:renamed", "delete:removed"],
    "wipe": ["wipe:layer-removed"],
}


def test_kills_at_every_step_leave_a_consistent_store(store):
    rng = random.Random(SEED)
    print(f"kill: driver {store.driver}, {KILLS} kills, seed {SEED} (replay: COWLAB_KILL_SEED={SEED})")
    ops = kills = 0
    n = 0
    start = time.time()
    store.run("import-layer", "base", "-", input=layer_tar(rng), check=True)
    while kills < KILLS:
        n += 1
        cmd = rng.choice(list(POINTS))
        lid = f"k{rng.randrange(6)}"
        data = None
        if cmd == "create-layer":
            args = [cmd, lid, "--parent", "base", "--rw"]
        elif cmd in ("import-layer", "applydiff"):
            args = [cmd, lid, "-"] + (["--parent", "base"] if cmd == "import-layer" else [])
            data = layer_tar(rng, n_files=rng.randrange(1, 20), size=200000)
        elif cmd == "wipe":
            if rng.random() > 0.1:
                continue
            args = [cmd]
        else:
            args = [cmd, lid]
        env = dict(os.environ)
        how = rng.random()
        if how < 0.5:
            env["COWLAB_TEST_KILL_AT"] = rng.choice(POINTS[cmd])
            p = store.run(*args, input=data, env=env)
            killed = p.returncode == -signal.SIGKILL
        else:
            # A random moment, real time: the process may finish first.
            proc = subprocess.Popen(store.cmd(*args), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            if data:
                try:
                    proc.stdin.write(data)
                except BrokenPipeError:
                    pass
            proc.stdin.close()
            time.sleep(rng.uniform(0, 0.08))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = proc.returncode == -signal.SIGKILL
        ops += 1
        if killed:
            kills += 1
            problems = store.check_consistent(f"after kill {kills} ({' '.join(args)}, "
                                              f"{env.get('COWLAB_TEST_KILL_AT', 'timed')}, op {n}, seed {SEED})")
            assert not problems, "\n".join(problems)
        # A wipe (finished, or killed after it removed the base) takes the base layer along.
        if not os.path.exists(os.path.join(store.root, "layers", "base.json")):
            store.run("import-layer", "base", "-", input=layer_tar(rng), check=True)
    print(f"kill: {ops} ops, {kills} kills in {time.time() - start:.1f}s, inconsistencies = 0")


def test_checker_catches_planted_faults(store):
    """The consistency check must report what it checks for: orphaned driver data, a layer
    without its data, a leaked mount."""
    rng = random.Random(SEED)
    store.run("import-layer", "a", "-", input=layer_tar(rng), check=True)
    store.run("import-layer", "b", "-", input=layer_tar(rng), check=True)
    assert store.check_consistent("clean") == []
    import json
    layers = {l["id"]: l for l in json.loads(store.run("--json", "layers", check=True).stdout)}
    home = os.path.join(store.root, store.driver, {"vfs": "dir", "btrfs": "subvolumes", "overlay": ""}[store.driver])
    orphan = os.path.join(home, "f" * 32)
    os.mkdir(orphan)
    victim = os.path.join(home, layers["b"]["cache_id"])
    moved = victim + ".moved"
    os.rename(victim, moved)
    leak = os.path.join(store.root, "leak")
    os.mkdir(leak)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", leak], check=True)
    try:
        problems = "\n".join(store.check_consistent("planted"))
    finally:
        subprocess.run(["umount", leak])
        os.rename(moved, victim)
        os.rmdir(orphan)
    assert "orphaned driver data" in problems, problems
    assert "without driver data" in problems, problems
    assert "leaked mounts" in problems, problems
