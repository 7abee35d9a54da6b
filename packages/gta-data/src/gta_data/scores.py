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
    # Dense-reward mazes and AntMaze: D4RL's env registrations (maze2d-*-dense-v1 ref_min/max_score; AntMaze
    # scores are success rates, 0 to 1).
    "maze2d-umaze-dense": (68.537689, 193.66285642381482),
    "maze2d-medium-dense": (44.264742, 297.4552547777125),
    "maze2d-large-dense": (30.569041, 303.4857382709002),
    "antmaze": (0.0, 1.0),
}

# Statistics of D4RL's own MuJoCo datasets (v2), to compare the locally made ones with (docs/datasets.md) and
# to choose the "medium" behaviour policy (tools/train_behaviour_policies.py). Returns are sums of the
# datasets' rewards over episodes split at terminals or timeouts (a trailing unfinished fragment left out);
# episodes count that fragment as one (TFDS's count); transitions are the datasets' rows (the medium-expert
# sizes of hopper and walker2d are inferred as medium + expert). Sources are listed in docs/datasets.md.
D4RL_DATASET_STATS: dict[str, dict[str, float]] = {
    "halfcheetah-random": {"transitions": 1000000, "episodes": 1000, "mean_return": -288.80, "min_return": -525.96, "max_return": -85.36},
    "halfcheetah-medium": {"transitions": 1000000, "episodes": 1000, "mean_return": 4770.33, "min_return": -310.23, "max_return": 5309.38},
    "halfcheetah-medium-replay": {"transitions": 202000, "episodes": 202, "mean_return": 3093.29, "min_return": -638.49, "max_return": 4985.14},
    "halfcheetah-expert": {"transitions": 1000000, "episodes": 1000, "mean_return": 10656.43, "min_return": 2045.83, "max_return": 11252.04},
    "halfcheetah-medium-expert": {"transitions": 2000000, "episodes": 2000, "mean_return": 7713.38, "min_return": -310.23, "max_return": 11252.04},
    "hopper-random": {"transitions": 1000000, "episodes": 45240, "mean_return": 18.40, "min_return": 2.93, "max_return": 292.55},
    "hopper-medium": {"transitions": 1000000, "episodes": 2187, "mean_return": 1422.06, "min_return": 315.87, "max_return": 3222.36},
    "hopper-medium-replay": {"transitions": 402000, "episodes": 2041, "mean_return": 467.30, "min_return": -1.44, "max_return": 3192.93},
    "hopper-expert": {"transitions": 1000000, "episodes": 1028, "mean_return": 3511.36, "min_return": 1645.28, "max_return": 3759.08},
    "hopper-medium-expert": {"transitions": 1999906, "episodes": 3214, "mean_return": 2089.88, "min_return": 315.87, "max_return": 3759.08},
    "walker2d-random": {"transitions": 1000000, "episodes": 48908, "mean_return": 1.87, "min_return": -17.01, "max_return": 75.03},
    "walker2d-medium": {"transitions": 1000000, "episodes": 1191, "mean_return": 2852.09, "min_return": -6.61, "max_return": 4226.94},
    "walker2d-medium-replay": {"transitions": 302000, "episodes": 1093, "mean_return": 682.70, "min_return": -50.20, "max_return": 4132.00},
    "walker2d-expert": {"transitions": 1000000, "episodes": 1001, "mean_return": 4920.51, "min_return": 763.42, "max_return": 5011.69},
    "walker2d-medium-expert": {"transitions": 1999995, "episodes": 2191, "mean_return": 3796.57, "min_return": -6.61, "max_return": 5011.69},
}

_FAMILY_PATTERNS: list[tuple[str, str]] = [  # first match wins: specific names before their prefixes
    (r"halfcheetah", "halfcheetah"),
    (r"hopper", "hopper"),
    (r"walker2d", "walker2d"),
    (r"antmaze", "antmaze"),
    (r"^ant|[-/_]ant[-_]", "ant"),
    (r"(pointmaze|maze2d)[-_/]?umaze[-_]?dense", "maze2d-umaze-dense"),
    (r"(pointmaze|maze2d)[-_/]?medium[-_]?dense", "maze2d-medium-dense"),
    (r"(pointmaze|maze2d)[-_/]?large[-_]?dense", "maze2d-large-dense"),
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
