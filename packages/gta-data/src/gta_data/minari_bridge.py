"""Minari <-> store bridge.

Import goes through the real ``minari.load_dataset`` path (``download=True`` is passed through for
users with network access) and bulk-reads all episodes in one storage call. Export goes through
``minari.create_dataset_from_buffers``, which needs no jax.

Observations: Minari episodes hold T+1 observations; the store holds ``observations[t]`` and
``next_observations[t]`` for the T transitions. Dict observation spaces are flattened into one vector;
for goal-conditioned spaces (PointMaze: observation, achieved_goal, desired_goal) the default keys are
``observation`` + ``desired_goal`` (achieved_goal repeats the position), and the layout is recorded in
the store's ``observation_layout`` attribute as ``[{key, start, stop}, ...]``. Exported datasets carry
the flat vector in a Box space.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gta_data.errors import StoreError
from gta_data.store import StoreWriter, TrajectoryStore, Transitions


def _require_minari():
    try:
        import minari
    except ImportError:
        raise StoreError("Minari support needs the extra: pip install 'gta-data[minari]'") from None
    return minari


def register_robotics_envs() -> None:
    """Register gymnasium-robotics environments (PointMaze, AntMaze, ...) when the package is present."""
    import contextlib
    import io

    try:
        import gymnasium as gym

        # gymnasium_robotics prints a notice about Adroit reward versions on import.
        with contextlib.redirect_stdout(io.StringIO()):
            import gymnasium_robotics
    except ImportError:
        return
    gym.register_envs(gymnasium_robotics)


def default_obs_keys(keys: Sequence[str]) -> list[str]:
    """Keys of a dict observation that form the flat vector (goal-conditioned: observation + desired_goal)."""
    keys = list(keys)
    if "observation" in keys and "desired_goal" in keys:
        return ["observation", "desired_goal"]
    return keys


def flatten_observations(obs: Any, keys: Sequence[str] | None = None) -> tuple[np.ndarray, list[dict] | None]:
    """Flatten a [T, ...] array or a dict of them into [T, obs_dim]; return the layout for dicts."""
    if not isinstance(obs, dict):
        arr = np.asarray(obs, dtype=np.float32)
        return arr.reshape(len(arr), -1), None
    keys = default_obs_keys(list(obs)) if keys is None else list(keys)
    missing = [k for k in keys if k not in obs]
    if missing:
        raise StoreError(f"observation dict lacks keys {missing} (has {sorted(obs)})")
    parts, layout, start = [], [], 0
    for key in keys:
        if isinstance(obs[key], dict):
            raise StoreError(f"nested dict observation under {key!r} is not supported")
        part = np.asarray(obs[key], dtype=np.float32)
        part = part.reshape(len(part), -1)
        parts.append(part)
        layout.append({"key": key, "start": start, "stop": start + part.shape[1]})
        start += part.shape[1]
    return np.concatenate(parts, axis=1), layout


def _episode_transitions(episode: dict, obs_keys: Sequence[str] | None) -> tuple[Transitions, list[dict] | None]:
    obs, layout = flatten_observations(episode["observations"], obs_keys)
    actions = np.asarray(episode["actions"], dtype=np.float32)
    n = len(actions)
    if len(obs) != n + 1:
        raise StoreError(f"episode has {len(obs)} observations for {n} actions (expected {n + 1})")
    return (
        Transitions(
            observations=obs[:-1],
            actions=actions.reshape(n, -1),
            rewards=np.asarray(episode["rewards"], dtype=np.float32),
            next_observations=obs[1:],
            terminals=np.asarray(episode["terminations"], dtype=bool),
            timeouts=np.asarray(episode["truncations"], dtype=bool),
        ),
        layout,
    )


def import_minari(
    dataset_id: str,
    out: str | os.PathLike,
    *,
    download: bool = False,
    obs_keys: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> TrajectoryStore:
    """Read a Minari dataset by id (``minari.load_dataset``) into a new store at ``out``."""
    minari = _require_minari()
    try:
        dataset = minari.load_dataset(dataset_id, download=download)
    except FileNotFoundError:
        raise StoreError(
            f"Minari dataset {dataset_id!r} not found locally (MINARI_DATASETS_PATH="
            f"{os.environ.get('MINARI_DATASETS_PATH', '~/.minari/datasets')}); pass --download to fetch it"
        ) from None
    metadata = dict(dataset.storage.metadata)
    env_spec = metadata.get("env_spec")
    env_id = _env_id_from_spec(env_spec) or dataset_id
    episodes = dataset.storage.get_episodes(dataset.episode_indices)
    writer = None
    try:
        for episode in episodes:
            transitions, layout = _episode_transitions(episode, obs_keys)
            if writer is None:
                writer = StoreWriter(
                    out,
                    env_id=env_id,
                    obs_dim=transitions.obs_dim,
                    act_dim=transitions.act_dim,
                    ref_min_score=metadata.get("ref_min_score"),
                    ref_max_score=metadata.get("ref_max_score"),
                    observation_layout=layout,
                    provenance={
                        "source": "minari",
                        "dataset_id": dataset_id,
                        "minari_version": metadata.get("minari_version"),
                        "algorithm_name": metadata.get("algorithm_name"),
                    },
                    attrs={"env_spec": env_spec} if env_spec else None,
                    overwrite=overwrite,
                )
            writer.add_episode(transitions)
            if progress is not None:
                progress(len(transitions))
        if writer is None:
            raise StoreError(f"Minari dataset {dataset_id!r} has no episodes")
        return writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _env_id_from_spec(env_spec: Any) -> str | None:
    if not env_spec:
        return None
    try:
        import gymnasium as gym

        spec = gym.envs.registration.EnvSpec.from_json(env_spec) if isinstance(env_spec, str) else env_spec
        return spec.id
    except Exception:
        return None


def store_to_episode_buffers(store: TrajectoryStore) -> list:
    """The store's episodes as Minari ``EpisodeBuffer``s (T+1 flat observations each)."""
    from minari.data_collector import EpisodeBuffer

    data = store.load()
    buffers = []
    for i, ep in enumerate(store.episodes(data)):
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=np.concatenate([ep.observations, ep.next_observations[-1:]]),
                actions=ep.actions,
                rewards=ep.rewards.astype(np.float64),
                terminations=ep.terminals,
                truncations=ep.timeouts,
            )
        )
    return buffers


def export_minari(
    store_path: str | os.PathLike,
    dataset_id: str,
    *,
    author: str | None = None,
    description: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a store as a local Minari dataset (``create_dataset_from_buffers``); returns its path."""
    minari = _require_minari()
    import gymnasium as gym

    store = TrajectoryStore.open(store_path)
    target = check_export_target(dataset_id, overwrite=overwrite)
    buffers = store_to_episode_buffers(store)  # read (and check) everything before an old dataset is touched
    register_robotics_envs()
    spec = None
    try:
        spec = gym.spec(store.env_id)
    except Exception:
        spec = None
    obs_space = gym.spaces.Box(-np.inf, np.inf, shape=(store.obs_dim,), dtype=np.float32)
    act_space = _action_space(spec, store.act_dim)
    lo_hi = store.ref_scores
    aside = None
    if target.exists():  # moved aside, deleted only once the new dataset is written
        aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, aside)
    try:
        with warnings.catch_warnings():
            # Minari warns about every optional metadata field left empty (permalink, e-mail, eval env).
            warnings.simplefilter("ignore", UserWarning)
            minari.create_dataset_from_buffers(
                dataset_id,
                buffer=buffers,
                env=spec,
                observation_space=obs_space,
                action_space=act_space,
                algorithm_name=str(store.provenance.get("recipe") or store.provenance.get("source") or "gta-data"),
                author=author or "gta-data",
                description=description or f"exported from the trajectory store {store.path.name}",
                ref_min_score=None if lo_hi is None else lo_hi[0],
                ref_max_score=None if lo_hi is None else lo_hi[1],
                data_format="hdf5",
            )
    except BaseException:
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        if aside is not None:
            os.replace(aside, target)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return target


def check_export_target(dataset_id: str, *, overwrite: bool = False) -> Path:
    """The local path of Minari dataset ``dataset_id``, after checking the id and that it is free (or that
    ``overwrite`` allows replacing it)."""
    _require_minari()
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage import get_dataset_path

    try:
        parse_dataset_id(dataset_id)
    except Exception as exc:
        raise StoreError(f"invalid Minari dataset id {dataset_id!r}: {exc}".splitlines()[0]) from None
    target = Path(get_dataset_path(dataset_id))
    if target.exists() and not overwrite:
        raise StoreError(f"Minari dataset {dataset_id!r} already exists at {target} (pass --overwrite to replace it)")
    return target


def _action_space(spec: Any, act_dim: int):
    import gymnasium as gym

    if spec is not None:
        try:
            env = gym.make(spec)
            space = env.action_space
            env.close()
            if isinstance(space, gym.spaces.Box) and space.shape == (act_dim,):
                return space
        except Exception:
            pass
    return gym.spaces.Box(-np.inf, np.inf, shape=(act_dim,), dtype=np.float32)
