"""N parallel clients doing mixed operations on one store, then the consistency check
(issue 11).  Seeds are fixed and printed: COWLAB_STRESS_SEED replays one."""
import os
import random
import subprocess
import time

from conftest import layer_tar

CLIENTS = int(os.environ.get("COWLAB_STRESS_CLIENTS", "4"))
OPS = int(os.environ.get("COWLAB_STRESS_OPS", "60"))  # per client
SEED = int(os.environ.get("COWLAB_STRESS_SEED", "1111"))


def client_ops(store, seed, n):
    """The command lines one client runs (decided up front from its seed)."""
    rng = random.Random(seed)
    ops = []
    ids = [f"s{seed % 100}-{i}" for i in range(8)]
    shared = ["base", "c0", "c1"]
    for _ in range(n):
        kind = rng.choice(["import", "create", "applydiff", "mount", "unmount", "delete", "layers",
                           "changes", "diff", "diffsize", "exists", "info"])
        lid = rng.choice(ids + shared)
        if kind == "import":
            ops.append((["import-layer", lid, "-"] + (["--parent", "base"] if rng.random() < 0.5 else []),
                        layer_tar(rng)))
        elif kind == "create":
            ops.append((["create-layer", lid, "--parent", "base", "--rw"], None))
        elif kind == "applydiff":
            ops.append((["applydiff", lid, "-"], layer_tar(rng)))
        elif kind in ("mount", "unmount", "delete", "changes", "diffsize", "exists"):
            ops.append(([{"delete": "delete-layer"}.get(kind, kind), lid], None))
        elif kind == "diff":
            ops.append((["diff", lid, "-o", "/dev/null"], None))
        else:
            ops.append(([kind], None))
    return ops


def test_parallel_clients_leave_a_consistent_store(store):
    print(f"stress: driver {store.driver}, {CLIENTS} clients x {OPS} ops, seed {SEED} "
          f"(replay: COWLAB_STRESS_SEED={SEED})")
    store.run("import-layer", "base", "-", input=layer_tar(random.Random(SEED)), check=True)
    for c in ("c0", "c1"):
        store.run("create-layer", c, "--parent", "base", "--rw", check=True)
    plans = [client_ops(store, SEED + i, OPS) for i in range(CLIENTS)]
    procs = [subprocess.Popen(["python3", "-c", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in plans]
    import pickle
    for p, plan in zip(procs, plans):
        p.stdin.write(pickle.dumps((store.cmd(), plan)))
        p.stdin.close()
    results = []
    start = time.time()
    for p in procs:
        out = p.stdout.read()
        p.wait(timeout=1800)
        assert p.returncode == 0, p.stderr.read().decode()
        results += pickle.loads(out)
    ok = sum(1 for rc, _ in results if rc == 0)
    failed = [(rc, err) for rc, err in results if rc != 0]
    # Refusals are fine (a layer mounted or deleted by another client); crashes and usage
    # errors are not, and neither is a store error nobody asked for.
    bad = [(rc, err) for rc, err in failed if rc != 1 or "corrupt" in err or "damaged" in err or "loops" in err]
    print(f"stress: {len(results)} ops in {time.time() - start:.1f}s: {ok} succeeded, {len(failed)} refused")
    assert not bad, bad[:10]
    problems = store.check_consistent(f"after {len(results)} parallel ops (seed {SEED})")
    assert not problems, "\n".join(problems)
    print("stress: inconsistencies = 0")


# One client: runs its plan, returns (exit status, stderr) per op.
RUNNER = r'''
import pickle, subprocess, sys
base, plan = pickle.loads(sys.stdin.buffer.read())
out = []
for args, data in plan:
    p = subprocess.run(base + args, input=data, capture_output=True, timeout=600)
    out.append((p.returncode, p.stderr.decode(errors="replace")))
sys.stdout.buffer.write(pickle.dumps(out))
'''
