"""The GTA trajectory store: a Zarr v3 group of transitions concatenated along time.

One layout serves every consumer of the monorepo: Q-learning reads transitions, the diffusion model
reads windows of H+1 rows inside episode bounds, the Decision Transformer reads whole episodes or
segments. An augmented store is the same format: each generated sub-trajectory is one segment.
The layout is specified in ``STORE_FORMAT.md`` next to this package.

Writes are atomic: a writer fills a hidden temporary sibling (``.<name>.tmp-<id>``) and renames it
into place only once every array and the final attributes (``complete: true`` last) are written, so
an interrupted write never leaves anything at the target path that opens as a store. A killed writer's
temporary sibling is removed by the next write of the same path (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from gta_data import store_dirs
from gta_data._version import __version__
from gta_data.errors import StoreError

_log = logging.getLogger(__name__)

FORMAT_NAME = "gta-trajectory-store"
# Chunks equal to the fill value are written too (Zarr skips them by default), so a missing chunk file means
# a damaged copy, not zeros; stores say so with the attribute every_chunk_written.
_EVERY_CHUNK = {"write_empty_chunks": True}
FORMAT_VERSION = 1

# Per-row arrays every store has: name -> (dtype, trailing shape key).
CORE_ARRAYS: dict[str, tuple[str, str | None]] = {
    "observations": ("float32", "obs_dim"),
    "actions": ("float32", "act_dim"),
    "rewards": ("float32", None),
    "next_observations": ("float32", "obs_dim"),
    "terminals": ("bool", None),
    "timeouts": ("bool", None),
}
_CHUNK_BYTES = 2 * 1024 * 1024


@dataclass
class Transitions:
    """Transitions as numpy arrays, all of the same length N (one episode or many, concatenated).

    ``extras`` holds optional per-row arrays (e.g. ``timesteps``, ``returns_to_go``).
    """

    observations: np.ndarray  # [N, obs_dim] float32
    actions: np.ndarray  # [N, act_dim] float32
    rewards: np.ndarray  # [N] float32
    next_observations: np.ndarray  # [N, obs_dim] float32
    terminals: np.ndarray  # [N] bool: true environment termination at this step
    timeouts: np.ndarray  # [N] bool: episode cut by a time limit (or segment end) at this step
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.observations = np.asarray(self.observations, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)
        self.next_observations = np.asarray(self.next_observations, dtype=np.float32)
        self.terminals = np.asarray(self.terminals, dtype=bool).reshape(-1)
        self.timeouts = np.asarray(self.timeouts, dtype=bool).reshape(-1)
        if self.observations.ndim == 1:
            self.observations = self.observations[:, None]
            self.next_observations = self.next_observations.reshape(-1, 1)
        if self.actions.ndim == 1:
            self.actions = self.actions[:, None]
        self.extras = {k: np.asarray(v) for k, v in self.extras.items()}
        n = len(self.observations)
        for name in CORE_ARRAYS:
            if len(getattr(self, name)) != n:
                raise StoreError(f"{name} has {len(getattr(self, name))} rows, observations has {n}")
        for name, arr in self.extras.items():
            if len(arr) != n:
                raise StoreError(f"extra array {name!r} has {len(arr)} rows, observations has {n}")
        if self.next_observations.shape[1:] != self.observations.shape[1:]:
            raise StoreError(
                f"next_observations has shape {self.next_observations.shape[1:]} per row, "
                f"observations {self.observations.shape[1:]}"
            )

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def arrays(self) -> dict[str, np.ndarray]:
        """All per-row arrays by store name (core arrays first, then extras)."""
        out = {name: getattr(self, name) for name in CORE_ARRAYS}
        out.update(self.extras)
        return out

    def slice(self, start: int, stop: int) -> Transitions:
        return Transitions(
            **{f.name: getattr(self, f.name)[start:stop] for f in fields(self) if f.name != "extras"},
            extras={k: v[start:stop] for k, v in self.extras.items()},
        )

    @staticmethod
    def concatenate(parts: list[Transitions]) -> Transitions:
        if not parts:
            raise StoreError("nothing to concatenate")
        keys = set(parts[0].extras)
        if any(set(p.extras) != keys for p in parts):
            raise StoreError("episodes disagree in their extra arrays")
        return Transitions(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(Transitions)
                if f.name != "extras"
            },
            extras={k: np.concatenate([p.extras[k] for p in parts]) for k in sorted(keys)},
        )


def dimension_names(name: str, ndim: int, first: str = "time") -> tuple[str, ...]:
    """Zarr v3 ``dimension_names`` of a per-row (``first="time"``) or per-episode (``"episode"``) array, so that
    xarray opens each group as one dataset: rows share "time", observations and next observations share
    "obs_dim", actions have "act_dim", any other array's trailing axes are "<name>_dim1", ..."""
    if first == "time" and name in CORE_ARRAYS and CORE_ARRAYS[name][1] is not None:
        return (first, CORE_ARRAYS[name][1])
    return (first, *(f"{name}_dim{i}" for i in range(1, ndim)))


def _chunk_rows(row_shape: tuple[int, ...], itemsize: int) -> int:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * itemsize)
    rows = max(1024, _CHUNK_BYTES // row_bytes)
    return 1 << (int(rows).bit_length() - 1)


_now = store_dirs.now
_clean_meta = store_dirs.clean_meta  # minari_bridge writes its metadata with it too


class StoreWriter(store_dirs.AtomicStoreWriter):
    """Write a store episode by episode, atomically.

    Use as a context manager: on normal exit the store is committed (renamed into place); on an
    exception the temporary directory is removed and nothing appears at ``path``
    (:class:`gta_data.store_dirs.AtomicStoreWriter`).

        with StoreWriter("orig.zarr", env_id="HalfCheetah-v5", obs_dim=17, act_dim=6) as w:
            for ep in episodes:
                w.add_episode(ep)
    """

    format_name = FORMAT_NAME
    error = StoreError
    kind = "trajectory store"
    noun = "store"
    log = _log

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        env_id: str,
        obs_dim: int,
        act_dim: int,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        provenance: Mapping[str, Any] | None = None,
        observation_layout: list[Mapping[str, Any]] | None = None,
        attrs: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        flush_rows: int = 1 << 16,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StoreError(f"{self.path} already exists (pass overwrite to replace it)")
        check_replaceable(self.path)
        if not self.path.parent.exists():
            raise StoreError(f"parent directory {self.path.parent} does not exist")
        if obs_dim <= 0 or act_dim <= 0:
            raise StoreError(f"obs_dim and act_dim must be positive, got {obs_dim} and {act_dim}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.flush_rows = flush_rows
        self._attrs: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "env_id": env_id,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "ref_min_score": ref_min_score,
            "ref_max_score": ref_max_score,
            "observation_layout": observation_layout,
            "provenance": {
                "producer": f"gta-data {__version__}",
                "created": _now(),
                **dict(provenance or {}),
            },
        }
        for key, value in dict(attrs or {}).items():
            if key in ("format", "format_version", "complete", "num_transitions", "num_episodes"):
                raise StoreError(f"attribute {key!r} is reserved")
            self._attrs[key] = value
        self._begin(self.path, self._attrs, overwrite=overwrite)
        self._group.create_group("data")
        self._group.create_group("meta")
        self._arrays: dict[str, zarr.Array] = {}
        self._meta_arrays: dict[str, zarr.Array] = {}
        self._pending: list[Transitions] = []
        self._pending_meta: dict[str, list[Any]] = {}
        self._pending_rows = 0
        self._rows = 0
        self._episode_ends: list[int] = []
        self._extra_keys: set[str] | None = None
        self._meta_keys: set[str] | None = None

    # -- writing -----------------------------------------------------------------------------

    def add_episode(self, episode: Transitions, **episode_meta: Any) -> None:
        """Append one episode (or segment). ``episode_meta`` are per-episode scalars or vectors stored
        under ``meta/<name>`` (e.g. ``source_start=17, seed=3``); every episode must give the same keys."""
        self.add_transitions(episode, np.array([len(episode)]),
                             **{k: np.asarray(v)[None] for k, v in episode_meta.items()})

    def add_transitions(self, transitions: Transitions, episode_ends: np.ndarray, **meta: np.ndarray) -> None:
        """Append many episodes at once (vectorised: no per-episode work): ``episode_ends`` are exclusive
        ends relative to ``transitions``; each ``meta`` array has one entry per episode."""
        self._check_open()
        ends = np.asarray(episode_ends, dtype=np.int64).reshape(-1)
        if len(transitions) == 0:
            raise StoreError("empty episode")
        _check_episode_ends(ends, len(transitions), where="episode_ends")
        if transitions.obs_dim != self.obs_dim or transitions.act_dim != self.act_dim:
            raise StoreError(
                f"episode has obs_dim {transitions.obs_dim}, act_dim {transitions.act_dim}; "
                f"store has {self.obs_dim}, {self.act_dim}"
            )
        if self._extra_keys is None:
            self._extra_keys = set(transitions.extras)
        elif set(transitions.extras) != self._extra_keys:
            raise StoreError(f"episode extras {sorted(transitions.extras)} differ from {sorted(self._extra_keys)}")
        if self._meta_keys is None:
            self._meta_keys = set(meta)
        elif set(meta) != self._meta_keys:
            raise StoreError(f"episode meta {sorted(meta)} differs from {sorted(self._meta_keys)}")
        for key, value in meta.items():
            value = np.asarray(value)
            if value.ndim == 0 or len(value) != len(ends):
                raise StoreError(f"meta {key!r} needs one entry per episode ({len(ends)})")
            self._pending_meta.setdefault(key, []).append(value)
        self._pending.append(transitions)
        self._episode_ends.extend((self._rows + self._pending_rows + ends).tolist())
        self._pending_rows += len(transitions)
        if self._pending_rows >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = Transitions.concatenate(self._pending)
        for name, arr in batch.arrays().items():
            target = self._arrays.get(name)
            if target is None:
                target = self._group.create_array(
                    f"data/{name}",
                    shape=(0, *arr.shape[1:]),
                    dtype=arr.dtype,
                    chunks=(_chunk_rows(arr.shape[1:], arr.dtype.itemsize), *arr.shape[1:]),
                    dimension_names=dimension_names(name, arr.ndim),
                    config=_EVERY_CHUNK,
                )
                self._arrays[name] = target
            elif target.shape[1:] != arr.shape[1:] or target.dtype != arr.dtype:
                raise StoreError(f"{name}: rows of shape {arr.shape[1:]} {arr.dtype} after {target.shape[1:]}")
            target.resize((self._rows + len(arr), *arr.shape[1:]))
            target[self._rows :] = arr
        for key, values in self._pending_meta.items():
            stacked = np.concatenate(values)
            target = self._meta_arrays.get(key)
            if target is None:
                target = self._group.create_array(
                    f"meta/{key}", shape=(0, *stacked.shape[1:]), dtype=stacked.dtype,
                    chunks=(1 << 16, *stacked.shape[1:]), dimension_names=dimension_names(key, stacked.ndim, "episode"),
                    config=_EVERY_CHUNK,
                )
                self._meta_arrays[key] = target
            n = target.shape[0]
            target.resize((n + len(stacked), *stacked.shape[1:]))
            target[n:] = stacked.astype(target.dtype)
        self._rows += self._pending_rows
        self._pending, self._pending_meta, self._pending_rows = [], {}, 0

    def update_provenance(self, **items: Any) -> None:
        """Add provenance known only once the data is written (e.g. how many generated actions were
        clipped); recorded at :meth:`commit`."""
        self._check_open()
        self._attrs["provenance"].update(items)

    def commit(self) -> TrajectoryStore:
        """Write the episode index and attributes, then rename the store into place."""
        return super().commit()

    def _finish(self) -> dict[str, Any]:
        self._flush()
        if self._rows == 0:
            raise StoreError("refusing to write a store with no transitions")
        ends = np.asarray(self._episode_ends, dtype=np.int64)
        self._group.create_array("meta/episode_ends", shape=ends.shape, dtype="int64", chunks=(1 << 16,),
                                 dimension_names=("episode",), config=_EVERY_CHUNK)
        self._group["meta/episode_ends"][:] = ends
        return {**self._attrs, "num_transitions": self._rows, "num_episodes": len(ends), "every_chunk_written": True}

    def _open(self) -> TrajectoryStore:
        return TrajectoryStore.open(self.path)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary stores that interrupted writes of ``path`` left behind (a kill or SIGTERM skips
    the writer's cleanup), saying so on stderr (the ``gta_data`` logger); returns what was removed. Only what
    is provably one: a directory named ``.<name>.tmp-<8 hex digits>`` whose attributes say it is an
    incomplete trajectory store written on this host by a process that no longer runs."""
    return store_dirs.remove_stale_temporaries(path, format_name=FORMAT_NAME, noun="store", log=_log)


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise unless writing a store at ``path`` with overwrite may replace what is there (nothing, an empty
    folder or a trajectory store). Commands call it before their work, and the commit calls it again."""
    path = Path(path)
    if path.exists() and not store_dirs.is_replaceable(path, FORMAT_NAME):
        raise StoreError(f"{path} is not a trajectory store: overwrite replaces stores only")


def write_store(
    path: str | os.PathLike,
    transitions: Transitions,
    episode_ends: np.ndarray,
    *,
    env_id: str,
    episode_meta: Mapping[str, np.ndarray] | None = None,
    **writer_kwargs: Any,
) -> TrajectoryStore:
    """Write arrays (episodes concatenated along time) to a new store in one go."""
    writer = StoreWriter(
        path, env_id=env_id, obs_dim=transitions.obs_dim, act_dim=transitions.act_dim, **writer_kwargs
    )
    with writer:
        writer.add_transitions(transitions, episode_ends, **dict(episode_meta or {}))
    return TrajectoryStore.open(path)


def write_episodes(
    path: str | os.PathLike,
    episodes: Iterable[Transitions],
    *,
    env_id: str,
    obs_dim: int,
    act_dim: int,
    **writer_kwargs: Any,
) -> TrajectoryStore:
    """Write an iterable of episodes to a new store (streamed: memory stays bounded)."""
    with StoreWriter(path, env_id=env_id, obs_dim=obs_dim, act_dim=act_dim, **writer_kwargs) as writer:
        for episode in episodes:
            writer.add_episode(episode)
    return TrajectoryStore.open(path)


def append_episodes(path: str | os.PathLike, episodes: Iterable[Transitions], **episode_meta_lists: Any) -> TrajectoryStore:
    """Append episodes to an existing store, atomically (copy-on-write: the old store stays intact and
    complete until the new one, old rows plus new, replaces it)."""
    old = TrajectoryStore.open(path)
    episodes = list(episodes)
    if old.meta_keys() != set(episode_meta_lists):
        raise StoreError(f"store has episode meta {sorted(old.meta_keys())}, got {sorted(episode_meta_lists)}")
    for key, values in episode_meta_lists.items():
        if len(values) != len(episodes):
            raise StoreError(f"meta {key!r} has {len(values)} entries for {len(episodes)} episodes")
    attrs = dict(old.attrs)
    writer = StoreWriter(
        old.path,
        env_id=attrs.pop("env_id"),
        obs_dim=old.obs_dim,
        act_dim=old.act_dim,
        ref_min_score=attrs.pop("ref_min_score", None),
        ref_max_score=attrs.pop("ref_max_score", None),
        observation_layout=attrs.pop("observation_layout", None),
        provenance={**attrs.pop("provenance", {}), "appended": _now()},
        attrs={k: v for k, v in attrs.items()
               if k not in ("format", "format_version", "complete", "num_transitions", "num_episodes",
                            "obs_dim", "act_dim")},
        overwrite=True,
    )
    with writer:
        old_meta = {k: old.meta(k) for k in old.meta_keys()}
        data = old.load()
        writer.add_transitions(data, old.episode_ends, **old_meta)
        for i, episode in enumerate(episodes):
            writer.add_episode(episode, **{k: v[i] for k, v in episode_meta_lists.items()})
    return TrajectoryStore.open(path)


def _check_episode_ends(ends: np.ndarray, n: int, *, where: str) -> None:
    store_dirs.check_episode_ends(ends, n, where=where, error=StoreError, unit="transitions")


class TrajectoryStore:
    """A validated, read-only view of a store on disk. Open with :meth:`open`.

    ``open`` checks the structure (format, version, completeness, array presence, shapes, dtypes,
    episode index); the values (finite floats, terminal placement) are checked on every full
    :meth:`load` and by :meth:`validate`.
    """

    def __init__(self, path: Path, group: zarr.Group, attrs: dict[str, Any], episode_ends: np.ndarray) -> None:
        self.path = path
        self._group = group
        self.attrs = attrs
        self.episode_ends = episode_ends

    # -- opening and validation ----------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike) -> TrajectoryStore:
        path = Path(path)
        group, attrs = store_dirs.open_complete_group(path, format_name=FORMAT_NAME, format_version=FORMAT_VERSION,
                                                      error=StoreError, kind="trajectory store", noun="store",
                                                      reader="gta-data")
        for key in ("env_id", "obs_dim", "act_dim", "num_transitions", "num_episodes"):
            if key not in attrs:
                raise StoreError(f"{path} lacks the attribute {key!r}")
        n = int(attrs["num_transitions"])
        dims = {"obs_dim": int(attrs["obs_dim"]), "act_dim": int(attrs["act_dim"])}
        for name, (dtype, dim_key) in CORE_ARRAYS.items():
            arr = _get_array(group, f"data/{name}", path)
            expected = (n,) if dim_key is None else (n, dims[dim_key])
            if arr.shape != expected:
                raise StoreError(f"{path}: data/{name} has shape {arr.shape}, expected {expected} (lengths disagree)")
            if arr.dtype != np.dtype(dtype):
                raise StoreError(f"{path}: data/{name} has dtype {arr.dtype}, expected {dtype}")
        try:
            extra = list(group["data"].arrays()) + [(f"meta/{k}", a) for k, a in group["meta"].arrays()]
            ends = np.asarray(_get_array(group, "meta/episode_ends", path)[:], dtype=np.int64)
        except StoreError:
            raise
        except Exception as exc:  # damaged metadata or chunks
            raise StoreError(f"{path}: cannot read its arrays ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        for name, arr in extra:
            if not name.startswith("meta/") and arr.shape[0] != n:
                raise StoreError(f"{path}: data/{name} has {arr.shape[0]} rows, expected {n} (lengths disagree)")
        if len(ends) != int(attrs["num_episodes"]):
            raise StoreError(f"{path}: {len(ends)} episode ends but num_episodes is {attrs['num_episodes']}")
        try:
            _check_episode_ends(ends, n, where="meta/episode_ends")
        except StoreError as exc:
            raise StoreError(f"{path}: {exc}") from None
        for name, arr in extra:
            if name.startswith("meta/") and arr.shape[0] != len(ends):
                raise StoreError(f"{path}: {name} has {arr.shape[0]} entries for {len(ends)} episodes")
        return cls(path, group, attrs, ends)

    def validate(self) -> TrajectoryStore:
        """Full check of the values: reads every array once."""
        self.load()
        return self

    # -- metadata --------------------------------------------------------------------------------

    @property
    def env_id(self) -> str:
        return str(self.attrs["env_id"])

    @property
    def obs_dim(self) -> int:
        return int(self.attrs["obs_dim"])

    @property
    def act_dim(self) -> int:
        return int(self.attrs["act_dim"])

    @property
    def num_transitions(self) -> int:
        return int(self.attrs["num_transitions"])

    @property
    def num_episodes(self) -> int:
        return int(self.attrs["num_episodes"])

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self.episode_ends])).astype(np.int64)

    @property
    def ref_scores(self) -> tuple[float, float] | None:
        lo, hi = self.attrs.get("ref_min_score"), self.attrs.get("ref_max_score")
        return None if lo is None or hi is None else (float(lo), float(hi))

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.attrs.get("provenance") or {})

    def extra_keys(self) -> set[str]:
        return {name for name, _ in self._group["data"].arrays()} - set(CORE_ARRAYS)

    def meta_keys(self) -> set[str]:
        return {name for name, _ in self._group["meta"].arrays()} - {"episode_ends"}

    def meta(self, name: str) -> np.ndarray:
        if name not in self.meta_keys():
            raise StoreError(f"{self.path} has no meta array {name!r}")
        return self._read(f"meta/{name}")

    # -- reading ----------------------------------------------------------------------------------

    def array(self, name: str) -> np.ndarray:
        """One per-row array, read in full."""
        if name not in CORE_ARRAYS and name not in self.extra_keys():
            raise StoreError(f"{self.path} has no array {name!r}")
        return self._read(f"data/{name}")

    def _read(self, key: str) -> np.ndarray:
        """An array in full, with one-line errors for damaged files (a missing chunk of a store that wrote
        every chunk, an undecodable chunk)."""
        return store_dirs.read_array(self._group, key, self.path, StoreError,
                                     every_chunk_written=bool(self.attrs.get("every_chunk_written")))

    def load(self, names: Iterable[str] | None = None) -> Transitions:
        """Every transition in one read (core arrays plus extras; ``names`` limits the extras).
        Raises on NaN/inf in float arrays or a terminal before the last step of an episode."""
        wanted = self.extra_keys() if names is None else set(names) & self.extra_keys()
        arrays = {name: self.array(name) for name in CORE_ARRAYS}
        for name in ("observations", "actions", "rewards", "next_observations"):
            if not np.isfinite(arrays[name]).all():
                raise StoreError(f"{self.path}: data/{name} contains NaN or inf")
        terminal_rows = np.flatnonzero(arrays["terminals"])
        if len(terminal_rows) and not np.isin(terminal_rows + 1, self.episode_ends).all():
            bad = int(terminal_rows[~np.isin(terminal_rows + 1, self.episode_ends)][0])
            raise StoreError(f"{self.path}: terminal at row {bad}, which is not the last step of its episode")
        return Transitions(**arrays, extras={name: self.array(name) for name in sorted(wanted)})

    def episodes(self, data: Transitions | None = None) -> Iterator[Transitions]:
        """Iterate episodes (segments) in order; loads the store once unless ``data`` is given."""
        data = self.load() if data is None else data
        start = 0
        for end in self.episode_ends:
            yield data.slice(start, int(end))
            start = int(end)

    def episode_returns(self, data: Transitions | None = None) -> np.ndarray:
        """Undiscounted return of each episode, float64."""
        rewards = (self.array("rewards") if data is None else data.rewards).astype(np.float64)
        return np.add.reduceat(rewards, self.episode_starts)

    def __repr__(self) -> str:
        return (
            f"TrajectoryStore({str(self.path)!r}, env_id={self.env_id!r}, transitions={self.num_transitions}, "
            f"episodes={self.num_episodes}, obs_dim={self.obs_dim}, act_dim={self.act_dim})"
        )


def _get_array(group: zarr.Group, name: str, path: Path) -> zarr.Array:
    return store_dirs.get_array(group, name, path, StoreError)


def open_store(path: str | os.PathLike) -> TrajectoryStore:
    """Open and structurally validate a store (see :class:`TrajectoryStore`)."""
    return TrajectoryStore.open(path)
