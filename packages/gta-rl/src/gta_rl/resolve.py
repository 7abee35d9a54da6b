"""From a :class:`~gta_rl.config.RunConfig` and its stores to what one run trains with: the
:class:`~gta_rl.config.ResolvedRun` (``config.json``) and the training data on the device. The algorithm's
settings merge here, in one place: the config dataclass's defaults, then the preset (``auto``: the one
matching the store's dataset name), then ``--set`` overrides; a resume without ``--preset``/``--set`` keeps
the settings it started with."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from gta_rl.algorithms import build_config, config_to_dict, match_preset
from gta_rl.buffer import RewardTransform, load_training_data, open_stores
from gta_rl.config import ResolvedRun, RunConfig, RunError
from gta_rl.evaluation import action_bound
from gta_rl.run_eval import EVAL_SEEDING, default_eval_episodes


def resolve_run(cfg: RunConfig, paths: tuple[str, ...], saved: dict[str, Any] | None,
                device: torch.device) -> tuple[ResolvedRun, Any]:
    """The resolved run on the stores ``paths`` and its data (OfflineData, or the Decision Transformer's
    sequence data) on ``device``; ``saved``: the config.json of the run being resumed. ``cfg`` has its
    algorithm defaults (:meth:`RunConfig.with_algorithm_defaults`). Nothing is written."""
    algorithm = cfg.algorithm
    stores = open_stores(paths)
    if saved is not None and cfg.preset == "auto" and not cfg.overrides and "algorithm_config" in saved:
        # A resume without --preset/--set continues with the settings the run started with, even where the
        # presets have changed since.
        cfg = replace(cfg, preset=saved.get("preset"), overrides=dict(saved.get("overrides") or {}))
        algo_cfg = build_config(algorithm, None, saved["algorithm_config"], check_ranges=False)
    else:
        if cfg.preset == "auto":
            cfg = replace(cfg, preset=match_preset(algorithm, _dataset_name(stores[0])))
        algo_cfg = build_config(algorithm, cfg.preset, cfg.overrides)
    if algorithm == "dt":
        data, stores = _load_dt_data(algo_cfg, list(paths), device, cfg.mix_ratio)
    else:
        reward = RewardTransform(algo_cfg.reward_scale, algo_cfg.reward_bias, algo_cfg.normalize_reward)
        data, stores = load_training_data(paths, device=device, reward_transform=reward, mix_ratio=cfg.mix_ratio)
    env_id = stores[0].env_id
    if cfg.eval_episodes is None:  # recorded in config.json as the number; a resumed run keeps its own
        recorded = saved.get("eval_episodes") if saved is not None else None
        cfg = replace(cfg, eval_episodes=default_eval_episodes(env_id, algorithm) if recorded is None
                      else int(recorded))
    env_kwargs = dict(stores[0].attrs.get("env_kwargs") or {})
    try:
        max_action = action_bound(env_id, env_kwargs)
    except (ValueError, ImportError):
        max_action = math.ceil(data.max_abs_action * 100) / 100  # no env here: the data's bound
    run = ResolvedRun(
        config=replace(cfg, data=paths),
        algorithm_config=config_to_dict(algo_cfg),
        env_id=env_id,
        env_kwargs=env_kwargs,
        obs_dim=data.obs_dim,
        act_dim=data.act_dim,
        max_action=max_action,
        ref_scores=tuple(stores[0].ref_scores) if stores[0].ref_scores else None,
        observation_layout=stores[0].attrs.get("observation_layout"),
        num_transitions=tuple(data.sizes),
        reward_factor=data.reward_factor,
        # runs started before per-seed evaluation episodes keep the scheme they started with
        eval_seeding=saved.get("eval_seeding") if saved is not None else EVAL_SEEDING,
    )
    return run, data


def _dataset_name(store) -> str:
    """Text the presets are matched against: string provenance (dataset ids, D4RL names), path, env."""
    prov = [str(v) for v in store.provenance.values() if isinstance(v, str)]
    return " ".join([*prov, store.path.name, store.env_id])


def _load_dt_data(algo_cfg, paths: list[str], device: torch.device, mix_ratio: float | None):
    """Sequence data of the Decision Transformer, checked against its config before anything is written."""
    from gta_rl.dt import resolve_targets
    from gta_rl.sequences import load_sequence_data

    try:
        resolve_targets(algo_cfg)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    data, stores = load_sequence_data(paths, context=algo_cfg.context, return_scale=algo_cfg.return_scale,
                                      device=device, mix_ratio=mix_ratio)
    limit = algo_cfg.episode_len + algo_cfg.context
    if data.max_timestep >= limit:
        raise RunError(f"the data has timestep {data.max_timestep}, beyond the timestep embedding "
                       f"(episode_len + context = {limit}); pass --set episode_len=N")
    return data, stores
