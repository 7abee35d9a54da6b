"""A readable summary of a store (``gta-data info``)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gta_data.scores import normalized_score
from gta_data.store import TrajectoryStore


def summarize(path: str | os.PathLike | TrajectoryStore) -> dict[str, Any]:
    store = path if isinstance(path, TrajectoryStore) else TrajectoryStore.open(path)
    data = store.load()
    returns = store.episode_returns(data)
    lengths = store.episode_lengths
    out: dict[str, Any] = {
        "env_id": store.env_id,
        "transitions": store.num_transitions,
        "episodes": store.num_episodes,
        "obs_dim": store.obs_dim,
        "act_dim": store.act_dim,
        "episode_length": {"mean": round(float(lengths.mean()), 1), "min": int(lengths.min()),
                           "max": int(lengths.max())},
        "return": {"mean": round(float(returns.mean()), 3), "std": round(float(returns.std()), 3),
                   "min": round(float(returns.min()), 3), "max": round(float(returns.max()), 3)},
        "terminals": int(data.terminals.sum()),
        "timeouts": int(data.timeouts.sum()),
        "reward": {"mean": round(float(data.rewards.mean()), 4), "min": round(float(data.rewards.min()), 4),
                   "max": round(float(data.rewards.max()), 4)},
    }
    try:
        scores = np.asarray(normalized_score(store, returns))
        lo, hi = store.ref_scores or (None, None)
        out["reference_scores"] = {"min": lo, "max": hi} if lo is not None else "D4RL table"
        out["normalized_return"] = {"mean": round(float(scores.mean()), 2), "min": round(float(scores.min()), 2),
                                    "max": round(float(scores.max()), 2)}
    except ValueError:
        out["reference_scores"] = None
    extras = sorted(store.extra_keys())
    meta = sorted(store.meta_keys())
    if extras:
        out["extra_arrays"] = ", ".join(extras)
    if meta:
        out["episode_meta"] = ", ".join(meta)
    if store.attrs.get("observation_layout"):
        out["observation_layout"] = {d["key"]: f"{d['start']}:{d['stop']}" for d in store.attrs["observation_layout"]}
    out["provenance"] = store.provenance
    return out
