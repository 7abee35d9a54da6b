"""Reference scores for normalized returns: 100 * (R - R_min) / (R_max - R_min) (D4RL; CORL).

The table holds D4RL's random/expert returns for the environment families of the GTA paper (section
5.1, Table 1). The gymnasium v5 MuJoCo environments and gymnasium-robotics PointMaze are the
successors of the D4RL ones, so their families share the table. A store or Minari dataset that carries
its own ``ref_min_score``/``ref_max_score`` takes precedence.
"""

from __future__ import annotations

import os
import re

import numpy as np

from gta_data.errors import StoreError

# family -> (random score, expert score), from D4RL's infos.py (REF_MIN_SCORE / REF_MAX_SCORE).
D4RL_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
}

# Statistics of D4RL's own MuJoCo datasets (v2), for comparing the locally made ones (docs/datasets.md) and
# for choosing the "medium" behaviour policy (tools/train_behaviour_policies.py): transitions, episodes,
# episode returns. Sources are listed in docs/datasets.md.
D4RL_DATASET_STATS: dict[str, dict[str, float]] = {
    "halfcheetah-medium": {"mean_return": 4770.3},
    "hopper-medium": {"mean_return": 1422.1},
    "walker2d-medium": {"mean_return": 2852.1},
}

_FAMILY_PATTERNS: list[tuple[str, str]] = [
    (r"halfcheetah", "halfcheetah"),
    (r"hopper", "hopper"),
    (r"walker2d", "walker2d"),
    (r"^ant|[-/_]ant[-_]", "ant"),
    (r"(pointmaze|maze2d)[-_/]?umaze", "maze2d-umaze"),
    (r"(pointmaze|maze2d)[-_/]?medium", "maze2d-medium"),
    (r"(pointmaze|maze2d)[-_/]?large", "maze2d-large"),
]


def env_family(env_or_dataset_id: str) -> str | None:
    """Family of an env id or dataset id ('HalfCheetah-v5', 'mujoco/halfcheetah/medium-v0',
    'PointMaze_UMaze-v3', 'D4RL/pointmaze/umaze-v2'), or None."""
    key = env_or_dataset_id.lower().replace("pointmaze/", "pointmaze_")
    for pattern, family in _FAMILY_PATTERNS:
        if re.search(pattern, key):
            return family
    return None


def reference_scores(env_or_store: object) -> tuple[float, float]:
    """(min, max) reference returns for an env id, a dataset id, a store path or a TrajectoryStore."""
    from gta_data.store import TrajectoryStore

    store = None
    if isinstance(env_or_store, TrajectoryStore):
        store = env_or_store
    elif isinstance(env_or_store, (str, os.PathLike)) and os.path.isdir(env_or_store):
        store = TrajectoryStore.open(env_or_store)
    if store is not None:
        if store.ref_scores is not None:
            return store.ref_scores
        env_or_store = store.env_id
    name = str(env_or_store)
    family = env_family(name)
    if family is None:
        raise StoreError(f"no reference scores for {name!r} (known: {', '.join(D4RL_REFERENCE_SCORES)})")
    return D4RL_REFERENCE_SCORES[family]


def normalized_score(env_or_store: object, returns: float | np.ndarray) -> float | np.ndarray:
    """100 * (R - R_min) / (R_max - R_min) with the reference scores of ``env_or_store``."""
    lo, hi = reference_scores(env_or_store)
    out = 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)
    return float(out) if out.ndim == 0 else out
