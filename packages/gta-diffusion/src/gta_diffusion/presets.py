"""Augmentation presets per dataset family (GTA appendix B.2, Tables 8 and 9; Sec. 5.4 guideline; C.4).

Table 8 gives search spaces, not one choice per dataset; a preset picks from them with the paper's
guideline (Sec. 5.4, Tables 4-5): suboptimal data (medium, medium-replay) gets more exploration and
exploitation (mu = 0.5, alpha = 1.3), near-expert data the conservative setting (mu = 0.25,
alpha = 1.1). Reweighting of the Gym locomotion datasets is Table 9 (N_B, u = 0.001, q = 5; none for
halfcheetah-medium). Sparse-reward families use episode reweighting with c = 10 (Table 8). V-D4RL latent
augmentation uses C.4 (alpha 2.0 / 1.3, mu 0.1, N_B = 50). Any explicit CLI option overrides a preset.
"""

from __future__ import annotations

from typing import Any

from gta_diffusion.errors import DiffusionError

_EXPLORE = {"mu": 0.5, "alpha": 1.3}  # Table 5 setting for suboptimal data
_CONSERVATIVE = {"mu": 0.25, "alpha": 1.1}  # Table 4 setting (stable gains)


def _bins(n: int) -> dict[str, Any]:
    return {"reweight": "bins", "num_bins": n, "u": 0.001, "q": 5.0}


_EPISODES = {"reweight": "episodes", "success_weight": 10.0}
_NONE = {"reweight": "none"}

DATASET_PRESETS: dict[str, dict[str, Any]] = {
    # Gym locomotion (Table 9 for the reweighting).
    "halfcheetah-medium": {**_EXPLORE, **_NONE},
    "halfcheetah-medium-replay": {**_EXPLORE, **_bins(50)},
    "halfcheetah-medium-expert": {**_CONSERVATIVE, **_bins(20)},
    "hopper-medium": {**_EXPLORE, **_bins(50)},
    "hopper-medium-replay": {**_EXPLORE, **_bins(50)},
    "hopper-medium-expert": {**_CONSERVATIVE, **_bins(50)},
    "walker2d-medium": {**_EXPLORE, **_bins(100)},
    "walker2d-medium-replay": {**_EXPLORE, **_bins(50)},
    "walker2d-medium-expert": {**_CONSERVATIVE, **_bins(50)},
    # Sparse and other families (Table 8: alpha / mu / reweighting search spaces).
    "maze2d": {"mu": 0.5, "alpha": 1.3, **_EPISODES},
    "antmaze": {"mu": 0.1, "alpha": 1.3, **_EPISODES},
    "adroit": {"mu": 0.25, "alpha": 1.1, **_NONE},
    "kitchen": {"mu": 0.25, "alpha": 1.3, **_EPISODES},
    # Pixel-based V-D4RL latents (appendix C.4).
    "vd4rl-medium": {"mu": 0.1, "alpha": 2.0, **_bins(50)},
    "vd4rl-medium-replay": {"mu": 0.1, "alpha": 1.3, **_bins(50)},
    "vd4rl-medium-expert": {"mu": 0.1, "alpha": 2.0, **_bins(50)},
    "vd4rl-expert": {"mu": 0.1, "alpha": 2.0, **_bins(50)},
}


def dataset_preset(name: str) -> dict[str, Any]:
    """AugmentConfig fields of a preset. Family names (maze2d-umaze -> maze2d) resolve to their family."""
    key = name.lower().removesuffix("-v2").removesuffix("-v1").removesuffix("-v0")
    if key in DATASET_PRESETS:
        return dict(DATASET_PRESETS[key])
    for family in ("maze2d", "antmaze", "adroit", "kitchen"):
        if key.startswith(family) or (family == "adroit" and key.split("-")[0] in ("pen", "door", "hammer", "relocate")):
            return dict(DATASET_PRESETS[family])
    raise DiffusionError(f"unknown dataset preset {name!r}; choose one of {', '.join(sorted(DATASET_PRESETS))}")
