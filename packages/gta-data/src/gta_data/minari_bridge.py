"""Minari <-> store bridge.

Import goes through the real ``minari.load_dataset`` path (``download=True`` is passed through for
users with network access; it needs ``minari[hf]``, which ``gta-data[minari]`` brings) and bulk-reads all
episodes in one storage call. Export goes through ``minari.create_dataset_from_buffers``, which needs no jax.

Observations: Minari episodes hold T+1 observations; the store holds ``observations[t]`` and
``next_observations[t]`` for the T transitions. Dict observation spaces are flattened into one vector;
for goal-conditioned spaces (PointMaze: observation, achieved_goal, desired_goal) the default keys are
``observation`` + ``desired_goal`` (achieved_goal repeats the position), and the layout is recorded in
the store's ``observation_layout`` attribute as ``[{key, start, stop}, ...]``. Export writes observations
in the environment's own space (a Dict split back by that layout) and never changes a value: where a store
episode's next observation is not its next row's observation, the episode is split there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gta_data.errors import StoreError
from gta_data.simulators import make_env, register_robotics_envs, simulator_versions
from gta_data.store import StoreWriter, TrajectoryStore, Transitions, _clean_meta

_log = logging.getLogger(__name__)

# Minari dataset metadata key under which export records what a store holds beyond Minari's fields.
GTA_METADATA_KEY = "gta_store"
# Keys of an env's Dict observation that a store's layout may omit because they repeat columns it keeps:
# gymnasium-robotics PointMaze's achieved_goal is the point's position, observation[0:2].
_DERIVED_KEYS = {"PointMaze_": {"achieved_goal": ("observation", 0, 2)}}


def _require_minari():
    try:
        import minari
    except ImportError:
        raise StoreError("Minari support needs the extra: pip install 'gta-data[minari]'") from None
    return minari


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


def _load_dataset(minari, dataset_id: str, download: bool):
    """``minari.load_dataset``, with a missing dataset, a missing download dependency and a failed download
    each as one line."""
    where = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
    try:
        return minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError:
        if not download:
            raise StoreError(f"Minari dataset {dataset_id!r} not found locally (MINARI_DATASETS_PATH={where}); "
                             "pass --download to fetch it") from None
    try:
        return minari.load_dataset(dataset_id, download=True)
    except ImportError as exc:
        raise StoreError(f"downloading Minari datasets needs huggingface_hub ({exc.name or exc}): "
                         "pip install 'gta-data[minari]'") from exc
    except Exception as exc:  # network and remote errors come in many types (httpx, huggingface_hub, ValueError)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise StoreError(f"cannot download Minari dataset {dataset_id!r}: {type(exc).__name__}: {first}") from exc


def _parse_spec(env_spec: Any):
    """A gymnasium ``EnvSpec`` from Minari's JSON (None if absent or unreadable)."""
    if not env_spec:
        return None
    try:
        import gymnasium as gym

        return gym.envs.registration.EnvSpec.from_json(env_spec) if isinstance(env_spec, str) else env_spec
    except Exception:
        return None


def env_kwargs_from_spec(spec) -> dict[str, Any]:
    """``gymnasium.make(spec.id, **kwargs)`` arguments that rebuild ``spec``'s environment: the spec's kwargs
    that differ from the registered ones (all of them if the id is not registered here), plus
    ``max_episode_steps``."""
    import gymnasium as gym

    register_robotics_envs()
    try:
        registered = dict(gym.spec(spec.id).kwargs)
    except gym.error.Error:
        registered = {}
    kwargs = {k: v for k, v in spec.kwargs.items() if k not in registered or registered[k] != v}
    if spec.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(spec.max_episode_steps)
    return kwargs


def spec_with_kwargs(env_id: str, env_kwargs: dict[str, Any] | None):
    """The registered spec of ``env_id`` with ``env_kwargs`` (a store's) applied, ``max_episode_steps``
    included; None when the id is not registered here."""
    import gymnasium as gym

    register_robotics_envs()
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return None
    kwargs = dict(env_kwargs or {})
    steps = kwargs.pop("max_episode_steps", spec.max_episode_steps)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **kwargs}, max_episode_steps=steps)


def _store_env_kwargs(spec, exported: dict) -> dict[str, Any] | None:
    """env_kwargs for the imported store: those export recorded when they still make the dataset's spec (a
    round trip gives them back as they were), else :func:`env_kwargs_from_spec`."""
    if "env_kwargs" in exported:
        mine = spec_with_kwargs(spec.id, exported["env_kwargs"])
        if mine is not None and (mine.kwargs, mine.max_episode_steps) == (spec.kwargs, spec.max_episode_steps):
            return exported["env_kwargs"]
    return env_kwargs_from_spec(spec)


def import_minari(
    dataset_id: str,
    out: str | os.PathLike,
    *,
    download: bool = False,
    obs_keys: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> TrajectoryStore:
    """Read a Minari dataset by id (``minari.load_dataset``) into a new store at ``out``.

    The environment comes from the dataset's ``eval_env_spec`` (else its ``env_spec``): its id is the store's
    ``env_id`` and its kwargs and episode length become ``env_kwargs`` (what evaluation must use). A dataset
    written by :func:`export_minari` gets its store back: the observation keys it was flattened from, and the
    episodes that export split re-joined."""
    minari = _require_minari()
    dataset = _load_dataset(minari, dataset_id, download)
    metadata = dict(dataset.storage.metadata)
    env_spec, eval_spec = metadata.get("env_spec"), metadata.get("eval_env_spec")
    spec = _parse_spec(eval_spec) or _parse_spec(env_spec)
    exported = metadata.get(GTA_METADATA_KEY) or {}
    if obs_keys is None and exported.get("observation_layout"):
        obs_keys = [item["key"] for item in exported["observation_layout"]]
    continued = _continued_episodes(exported)
    attrs: dict[str, Any] = {k: v for k, v in (("env_spec", env_spec), ("eval_env_spec", eval_spec)) if v}
    env_kwargs = None if spec is None else _store_env_kwargs(spec, exported)
    if env_kwargs is not None:
        attrs["env_kwargs"] = env_kwargs
    provenance = {"source": "minari", "dataset_id": dataset_id, "minari_version": metadata.get("minari_version"),
                  "algorithm_name": metadata.get("algorithm_name"), "simulators": simulator_versions()}
    if exported.get("provenance"):
        provenance["exported_store"] = exported["provenance"]
    episodes = dataset.storage.get_episodes(dataset.episode_indices)
    writer, pending = None, []
    try:
        for episode in episodes:
            transitions, layout = _episode_transitions(episode, obs_keys)
            if writer is None:
                writer = StoreWriter(
                    out, env_id=spec.id if spec is not None else dataset_id, obs_dim=transitions.obs_dim,
                    act_dim=transitions.act_dim, ref_min_score=metadata.get("ref_min_score"),
                    ref_max_score=metadata.get("ref_max_score"), observation_layout=layout, provenance=provenance,
                    attrs=attrs, overwrite=overwrite,
                )
            episode_id = int(episode["id"])
            if episode_id in continued:  # export split this store episode here: the cut was not a timeout
                transitions.timeouts[-1] = continued[episode_id]
            pending.append(transitions)
            if episode_id not in continued:
                writer.add_episode(pending[0] if len(pending) == 1 else Transitions.concatenate(pending))
                pending = []
            if progress is not None:
                progress(len(transitions))
        if writer is None:
            raise StoreError(f"Minari dataset {dataset_id!r} has no episodes")
        if pending:
            writer.add_episode(Transitions.concatenate(pending))
        return writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _continued_episodes(exported: dict) -> dict[int, bool]:
    """Minari episode ids that export cut out of a longer store episode -> the store's timeout at the cut."""
    split = exported.get("split") or {}
    ids = [i for first, last in split.get("continued", []) for i in range(int(first), int(last) + 1)]
    timeouts = set(split.get("timeouts", []))
    return {i: i in timeouts for i in ids}


@dataclasses.dataclass(frozen=True)
class EpisodePlan:
    """How a store's rows become Minari episodes: exclusive ``ends`` of the pieces; ``continued[k]`` says that
    piece k was cut out of a store episode that goes on in piece k + 1."""

    ends: np.ndarray  # [K] int64
    continued: np.ndarray  # [K] bool

    @property
    def split_rows(self) -> int:
        return int(self.continued.sum())


def plan_episodes(data: Transitions, episode_ends: np.ndarray) -> EpisodePlan:
    """Cut every store episode after each row t whose ``next_observations[t]`` is not bit for bit
    ``observations[t + 1]`` (a goal switched between two steps; a transition-level store), so that every piece
    has an exact sequence of T+1 observations, which is all a Minari episode can hold."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    # Bitwise, so that export cannot even turn -0.0 into 0.0 (rows are float32).
    differs = np.any(data.next_observations[:-1].view(np.uint32) != data.observations[1:].view(np.uint32),
                     axis=1)  # [N-1]
    cuts = np.flatnonzero(differs) + 1
    cuts = cuts[~np.isin(cuts, ends)]
    pieces = np.union1d(ends, cuts)
    return EpisodePlan(ends=pieces, continued=~np.isin(pieces, ends))


def _observation_converter(store: TrajectoryStore, env):
    """The observation space to export with and a function [T+1, obs_dim] -> that space's batch: the env's own
    space (a Dict split by the store's ``observation_layout``; a Box of the store's width), else a float32 Box."""
    import gymnasium as gym

    space = None if env is None else env.observation_space
    if space is None:
        return gym.spaces.Box(-np.inf, np.inf, shape=(store.obs_dim,), dtype=np.float32), lambda flat: flat
    if isinstance(space, gym.spaces.Box):
        if int(np.prod(space.shape)) != store.obs_dim:
            raise StoreError(f"{store.path}: rows of width {store.obs_dim} do not fit {store.env_id}'s observation "
                             f"space of shape {space.shape}")
        _check_cast(store, "observations", space)
        return space, lambda flat: flat.reshape(len(flat), *space.shape).astype(space.dtype)
    if not isinstance(space, gym.spaces.Dict):
        raise StoreError(f"{store.path}: cannot export observations to {store.env_id}'s space {space}")
    layout = store.attrs.get("observation_layout")
    if not layout:
        raise StoreError(f"{store.path}: {store.env_id} observes a Dict but the store has no observation_layout")
    columns = {}
    for key, sub in space.spaces.items():
        if not isinstance(sub, gym.spaces.Box):
            raise StoreError(f"{store.path}: {store.env_id}'s observation {key!r} is not a Box ({sub})")
        cols = _layout_columns(store.env_id, layout, key)
        if cols is None:
            raise StoreError(f"{store.path}: the store's observation_layout lacks {key!r} of {store.env_id}'s "
                             "observation space (import the data with --obs-keys naming it)")
        if cols[1] - cols[0] != int(np.prod(sub.shape)):
            raise StoreError(f"{store.path}: observation_layout gives {key!r} width {cols[1] - cols[0]}, "
                             f"{store.env_id} has shape {sub.shape}")
        _check_cast(store, key, sub)
        columns[key] = (cols, sub)

    def convert(flat: np.ndarray) -> dict[str, np.ndarray]:
        return {key: flat[:, a:b].reshape(len(flat), *sub.shape).astype(sub.dtype)
                for key, ((a, b), sub) in columns.items()}

    return space, convert


def _check_cast(store: TrajectoryStore, key: str, space) -> None:
    if not np.can_cast(np.float32, space.dtype, casting="safe"):
        raise StoreError(f"{store.path}: float32 {key} cannot be written exactly as {space.dtype}")


def _layout_columns(env_id: str, layout: Sequence[dict], key: str) -> tuple[int, int] | None:
    """[start, stop) of ``key`` in the flat rows: from the layout, or derived from a key it holds."""
    by_key = {item["key"]: (int(item["start"]), int(item["stop"])) for item in layout}
    if key in by_key:
        return by_key[key]
    for prefix, derived in _DERIVED_KEYS.items():
        if env_id.startswith(prefix) and key in derived and derived[key][0] in by_key:
            source, start, stop = derived[key]
            return by_key[source][0] + start, by_key[source][0] + stop
    return None


def _episode_buffers(data: Transitions, plan: EpisodePlan, to_space: Callable[[np.ndarray], Any]) -> list:
    """One Minari ``EpisodeBuffer`` per piece of the plan (T+1 observations each); a cut piece ends truncated."""
    from minari.data_collector import EpisodeBuffer

    buffers, start = [], 0
    for k, end in enumerate(plan.ends.tolist()):
        truncations = data.timeouts[start:end].copy()
        truncations[-1] |= bool(plan.continued[k])
        buffers.append(EpisodeBuffer(
            id=k,
            observations=to_space(np.concatenate([data.observations[start:end], data.next_observations[end - 1:end]])),
            actions=data.actions[start:end],
            rewards=data.rewards[start:end].astype(np.float64),
            terminations=data.terminals[start:end],
            truncations=truncations,
        ))
        start = end
    return buffers


def _split_metadata(data: Transitions, plan: EpisodePlan) -> dict[str, Any]:
    """Which pieces continue (as inclusive [first, last] id runs) and which of those cuts were store timeouts."""
    ids = np.flatnonzero(plan.continued)
    runs = np.split(ids, np.flatnonzero(np.diff(ids) != 1) + 1) if len(ids) else []
    timeouts = ids[data.timeouts[plan.ends[ids] - 1]]
    return {"continued": [[int(r[0]), int(r[-1])] for r in runs], "timeouts": timeouts.tolist()}


def export_minari(
    store_path: str | os.PathLike,
    dataset_id: str,
    *,
    author: str | None = None,
    description: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a store as a local Minari dataset (``create_dataset_from_buffers``); returns its path.

    Observations take the environment's own space (PointMaze: its Dict), the environment spec carries the
    store's ``env_kwargs`` (as ``env_spec`` and ``eval_env_spec``). Store episodes are split where a
    next observation is not the next row's observation (:func:`plan_episodes`; said on stderr), and the
    dataset's ``gta_store`` metadata records the splits, the layout and the provenance, so that
    :func:`import_minari` gives the same store back."""
    minari = _require_minari()
    store = TrajectoryStore.open(store_path)
    target = check_export_target(dataset_id, overwrite=overwrite)
    data = store.load()  # read (and check) everything before an old dataset is touched
    spec = spec_with_kwargs(store.env_id, store.attrs.get("env_kwargs"))
    env = None if spec is None else make_env(spec)
    try:
        obs_space, to_space = _observation_converter(store, env)
        act_space = _action_space(env, store.act_dim)
    finally:
        if env is not None:
            env.close()
    plan = plan_episodes(data, store.episode_ends)
    buffers = _episode_buffers(data, plan, to_space)
    extra = {GTA_METADATA_KEY: _clean_meta({
        "observation_layout": store.attrs.get("observation_layout"), "env_kwargs": store.attrs.get("env_kwargs"),
        "provenance": store.provenance, "split": _split_metadata(data, plan)})}
    lo_hi = store.ref_scores
    aside = None
    if target.exists():  # moved aside, deleted only once the new dataset is written
        aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, aside)
    try:
        with warnings.catch_warnings():
            # Minari warns about every optional metadata field left empty (permalink, e-mail).
            warnings.simplefilter("ignore", UserWarning)
            dataset = minari.create_dataset_from_buffers(
                dataset_id,
                buffer=buffers,
                env=spec,
                eval_env=spec,
                observation_space=obs_space,
                action_space=act_space,
                algorithm_name=str(store.provenance.get("recipe") or store.provenance.get("source") or "gta-data"),
                author=author or "gta-data",
                description=description or f"exported from the trajectory store {store.path.name}",
                ref_min_score=None if lo_hi is None else lo_hi[0],
                ref_max_score=None if lo_hi is None else lo_hi[1],
                data_format="hdf5",
            )
            dataset.storage.update_metadata(extra)
    except BaseException:
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        if aside is not None:
            os.replace(aside, target)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    if plan.split_rows:
        _log.warning("%s: %d store episodes became %d Minari episodes: cut after the %d rows whose "
                     "next_observations are not the next row's observations (marked truncated; re-import joins them)",
                     dataset_id, store.num_episodes, len(plan.ends), plan.split_rows)
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


def _action_space(env, act_dim: int):
    import gymnasium as gym

    if env is not None and isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (act_dim,):
        return env.action_space
    return gym.spaces.Box(-np.inf, np.inf, shape=(act_dim,), dtype=np.float32)
