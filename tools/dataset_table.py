"""Make the D4RL-style locomotion datasets with the gta-data recipes and compare them with D4RL's own.

For each dataset name (default: all 18 ``{halfcheetah,hopper,walker2d}-{random,random-uniform,medium,
medium-replay,expert,medium-expert}``) this runs ``gta_data.recipes.make_dataset`` at its default size (1M
transitions; 2M for medium-expert; the whole replay for medium-replay), times it, and reports transitions,
episodes, mean / min / max episode return and the normalized mean return next to D4RL's statistics of the
namesake (``gta_data.scores.D4RL_DATASET_STATS``; ``random-uniform`` is compared with D4RL's ``random``).
Returns are over complete episodes, as D4RL's statistics: those ending in a termination or at the 1000-step
limit (episodes cut by the dataset size, by the medium/expert junction or, in medium-replay, by the end of the
recorded run are left out of the return columns).

    python tools/dataset_table.py --jobs 2 --markdown docs/datasets-table.md --out datasets.json
    python tools/dataset_table.py --names hopper-random --size 5000 --out /tmp/t.json   # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

FAMILIES = ("halfcheetah", "hopper", "walker2d")
KINDS = ("random", "random-uniform", "medium", "medium-replay", "expert", "medium-expert")
MAX_STEPS = 1000  # the locomotion envs' time limit


def complete_returns(store) -> np.ndarray:
    """Returns of the episodes that ended by termination or at the time limit (not the ones the dataset
    size, the medium/expert junction or the end of a replay cut short)."""
    returns = np.asarray(store.episode_returns(), dtype=np.float64)
    terminals = np.asarray(store.load().terminals)
    ends = np.asarray(store.episode_ends)
    complete = terminals[ends - 1] | (np.asarray(store.episode_lengths) >= MAX_STEPS)
    return returns[complete] if complete.any() else returns


def one(name: str, size: int | None, workdir: str, keep: bool) -> dict[str, Any]:
    from gta_data.recipes import make_dataset
    from gta_data.scores import D4RL_DATASET_STATS, normalized_score

    out = Path(workdir) / f"{name}.zarr"
    t0 = time.perf_counter()
    store = make_dataset(name, out, size=size, seed=0, overwrite=True)
    seconds = time.perf_counter() - t0
    returns = complete_returns(store)
    row = {"name": name, "transitions": store.num_transitions, "episodes": store.num_episodes,
           "seconds": round(seconds, 1), "mean_return": float(returns.mean()), "min_return": float(returns.min()),
           "max_return": float(returns.max()), "normalized": float(normalized_score(store, returns.mean())),
           "d4rl": D4RL_DATASET_STATS.get(name.removesuffix("-uniform"))}
    if row["d4rl"]:
        row["d4rl_normalized"] = float(normalized_score(store, row["d4rl"]["mean_return"]))
    check = store.provenance.get("replay_check")
    if check:
        row["replay_check"] = check
    if not keep:
        import shutil

        shutil.rmtree(out)
    return row


def markdown(rows: list[dict[str, Any]], machine: str) -> str:
    lines = [f"| dataset | transitions | episodes | mean return | min | max | normalized | "
             f"D4RL transitions | D4RL episodes | D4RL mean | D4RL min | D4RL max | D4RL normalized | "
             f"time to make ({machine}) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = r.get("d4rl") or {}
        lines.append(
            f"| {r['name']} | {r['transitions']:,} | {r['episodes']:,} | {r['mean_return']:.1f} | {r['min_return']:.1f} "
            f"| {r['max_return']:.1f} | {r['normalized']:.1f} | {d.get('transitions', 0):,} | {d.get('episodes', 0):,} "
            f"| {d.get('mean_return', float('nan')):.1f} | {d.get('min_return', float('nan')):.1f} "
            f"| {d.get('max_return', float('nan')):.1f} | {r.get('d4rl_normalized', float('nan')):.1f} "
            f"| {r['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", default=",".join(f"{f}-{k}" for f in FAMILIES for k in KINDS))
    ap.add_argument("--size", type=int, default=None, help="transitions per dataset (default: the recipe's)")
    ap.add_argument("--jobs", type=int, default=1, help="datasets made at once (processes)")
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the stores (with --workdir)")
    ap.add_argument("--markdown", type=Path, default=None, help="write the table here")
    ap.add_argument("--out", type=Path, required=True, help="JSON results")
    a = ap.parse_args()
    names = [n for n in a.names.split(",") if n]
    machine = f"{platform.machine()}, 1 core"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = a.workdir or tmp
        Path(workdir).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if a.jobs > 1:
            with ProcessPoolExecutor(a.jobs) as pool:
                rows = list(pool.map(one, names, [a.size] * len(names), [workdir] * len(names),
                                     [a.keep] * len(names)))
        else:
            rows = [one(n, a.size, workdir, a.keep) for n in names]
        wall = time.perf_counter() - t0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"rows": rows, "wall_s": wall, "jobs": a.jobs, "size": a.size}, indent=2) + "\n")
    table = markdown(rows, machine)
    if a.markdown:
        a.markdown.parent.mkdir(parents=True, exist_ok=True)
        a.markdown.write_text(table)
    print(table)
    print(f"{len(rows)} datasets in {wall:.0f} s ({a.jobs} processes)")


if __name__ == "__main__":
    main()
