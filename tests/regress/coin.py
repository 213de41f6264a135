"""A seeded coin flip per run of `--repeat`: the scenario expects "heads", except on the runs
the coin gave tails (`when: {runs: [...]}`), where it expects "tails" and so fails."""
import random

SEED = 20261201


def flips(n, seed=SEED):
    rng = random.Random(seed)
    return [rng.random() < 0.5 for _ in range(n)]  # True: heads (the run passes)


def write_scenario(path, n, seed=SEED, name="coin-flip"):
    heads = flips(n, seed)
    tails = [i + 1 for i, h in enumerate(heads) if not h]
    case = f"""    cases:
      - when: {{runs: [{", ".join(map(str, tails))}]}}
        content: "tails"
""" if tails else ""
    path.write_text(f"""# Written by tests/regress/coin.py: seed {seed}, runs {n}, tails on runs {tails}.
scenario: {name}
description: Expects heads, except on the runs a seeded coin gave tails (a deliberately flaky cell).
groups: [harness-test]
layers:
  - id: base
    entries:
      - {{path: coin, content: "heads"}}
containers:
  - {{id: c1, image: base}}
expect:
  - view: {{in: c1, path: coin, content: "heads"}}
{case}""")
    return heads
