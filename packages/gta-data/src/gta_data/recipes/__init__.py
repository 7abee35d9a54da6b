"""Dataset recipes: make offline datasets locally, deterministically from a seed (docs/datasets.md).

Each recipe streams episodes into a trajectory store; ``make_dataset`` can also export the result as a
local Minari dataset. Recipes step real simulators, so they need ``gta-data[recipes]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from gta_data.errors import RecipeError
from gta_data.recipes.recipe import Recipe
from gta_data.simulators import simulator_versions
from gta_data.store import StoreWriter, TrajectoryStore

__all__ = ["MAX_SIZE", "Recipe", "list_recipes", "make_dataset"]


_OPTION_FLAGS = {"env_id": "--env", "policy_file": "--policy-file", "replay_file": "--replay-file",
                 "action_noise": "action_noise (library only)"}


# The most transitions a recipe makes: D4RL's largest datasets (medium-expert) have 2M.
MAX_SIZE = 100_000_000


def _check_export_memory(size: int, obs_dim: int, act_dim: int) -> None:
    """Minari export holds the whole store in memory (read once, then as episode buffers of float64): refuse a
    size whose export would not fit in this machine's memory, before any simulation."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return
    row = 4 * (2 * obs_dim + act_dim + 1) + 2  # a store row: float32 observations, next observations, actions
    need = size * (row + 8 * (obs_dim + 1) + 4 * act_dim + 2)  # plus the buffers' float64 observations, rewards
    if need > memory:
        raise RecipeError(f"--minari-id with size {size:,}: the export would hold about {need / 2**30:.1f} GiB in "
                          f"memory, this machine has {memory / 2**30:.1f} GiB")


def _registry() -> dict[str, Recipe]:
    from gta_data.recipes import locomotion, pointmaze, random_policy

    recipes = [random_policy.RECIPE, *pointmaze.RECIPES, *locomotion.RECIPES]
    return {r.name: r for r in recipes}


def list_recipes() -> dict[str, Recipe]:
    return _registry()


def make_dataset(
    name: str,
    out: str | os.PathLike,
    *,
    size: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    minari_id: str | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> TrajectoryStore:
    """Run recipe ``name`` for ``size`` transitions into a new store at ``out`` (and a Minari dataset
    ``minari_id`` if given)."""
    recipes = _registry()
    if name not in recipes:
        raise RecipeError(f"unknown recipe {name!r} (known: {', '.join(sorted(recipes))})")
    recipe = recipes[name]
    unknown = sorted(k for k, v in options.items() if v is not None and k not in recipe.options)
    if unknown:
        flags = ", ".join(_OPTION_FLAGS.get(k, k) for k in unknown)
        raise RecipeError(f"recipe {name!r} takes no {flags} (its options: "
                          f"{', '.join(_OPTION_FLAGS.get(k, k) for k in recipe.options) or 'none'})")
    size = recipe.default_size if size is None else int(size)
    if size <= 0:
        raise RecipeError(f"size must be positive, got {size}")
    if size > MAX_SIZE:
        raise RecipeError(f"size {size:,} is above the {MAX_SIZE:,} transitions a recipe makes (50x D4RL's largest "
                          "dataset; that many already take tens of GB and days of simulation)")
    if not 0 <= int(seed) < 2**32:
        raise RecipeError(f"seed must be in [0, 2^32), got {seed}")
    if minari_id is not None:  # before any work: a bad or taken id fails now, not after the store is written
        from gta_data.minari_bridge import check_export_target

        check_export_target(minari_id, overwrite=overwrite)
    episodes, meta = recipe.build(size, seed, options)
    if minari_id is not None:
        _check_export_memory(size, meta["obs_dim"], meta["act_dim"])
    provenance = {"source": "recipe", "recipe": name, "seed": seed, "size": size, "simulators": simulator_versions(),
                  **meta.pop("provenance", {})}
    with StoreWriter(out, provenance=provenance, overwrite=overwrite, **meta) as writer:
        for episode in episodes:
            writer.add_episode(episode)
            if progress is not None:
                progress(len(episode))
    store = TrajectoryStore.open(out)
    if minari_id is not None:
        from gta_data.minari_bridge import export_minari

        export_minari(out, minari_id, description=f"gta-data recipe {name} (seed {seed}, {size} steps)",
                      overwrite=overwrite)
    return store
