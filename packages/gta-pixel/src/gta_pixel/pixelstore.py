"""The pixel store: image-observation datasets as a Zarr v3 group, every frame stored once.

DrQ+BC reads stacks of the last ``frame_stack`` frames; storing stacked observations (and next
observations) would repeat each frame 2 x frame_stack times. Here an episode of L steps keeps its L + 1
frames once, in order, and the stacks are gathered by index (:func:`stack_indices`) with V-D4RL's replay
buffer convention, so the whole dataset fits on a GPU as uint8 and is stacked there. The layout, the
frame-row convention and the invariants are specified in ``PIXEL_STORE_FORMAT.md`` next to this package.

Writes are atomic as gta-data's trajectory store's are: a writer fills a hidden temporary sibling
(``.<name>.tmp-<id>``, ``complete: false``), writes the final attributes (``complete: true``) last and only
then renames it into place; a killed writer's leftover is removed by the next write of the same path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr

from gta_data import store_dirs
from gta_pixel._version import __version__
from gta_pixel.errors import PixelStoreError

_log = logging.getLogger(__name__)

FORMAT_NAME = "gta-pixel-store"
FORMAT_VERSION = 1
FRAME_CHUNK = 128  # frames per chunk of `frames` (2.7 MB raw at 84 px)
_EVERY_CHUNK = {"write_empty_chunks": True}
# Per-step arrays: name -> dtype (actions have a trailing act_dim axis).
STEP_ARRAYS: dict[str, str] = {
    "actions": "float32",
    "rewards": "float32",
    "discounts": "float32",
    "terminals": "bool",
    "timeouts": "bool",
}
_DIMS = {
    "frames": ("frame", "channel", "height", "width"),
    "states": ("frame", "state_dim"),
    "actions": ("step", "act_dim"),
    "episode_ends": ("episode",),
}


@dataclass
class PixelData:
    """A pixel dataset as numpy arrays: N steps in E episodes, F = N + E frames (see the format)."""

    frames: np.ndarray  # [F, 3, H, W] uint8
    actions: np.ndarray  # [N, A] float32
    rewards: np.ndarray  # [N] float32
    discounts: np.ndarray  # [N] float32
    terminals: np.ndarray  # [N] bool
    timeouts: np.ndarray  # [N] bool
    episode_ends: np.ndarray  # [E] int64, exclusive end step of each episode
    states: np.ndarray | None = None  # [F, state_dim] float32

    @property
    def num_steps(self) -> int:
        return int(len(self.actions))

    @property
    def num_episodes(self) -> int:
        return int(len(self.episode_ends))

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    def obs_frame_rows(self) -> np.ndarray:
        """Frame row of the observation of each step (step i of episode e: i + e); + 1 gives the next one."""
        return frame_rows(self.episode_ends)


def frame_rows(episode_ends: np.ndarray) -> np.ndarray:
    """[N] the frame row of the observation of each step: step row i of episode e is frame row i + e."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    lengths = np.diff(np.concatenate([[0], ends]))
    return np.arange(int(ends[-1]), dtype=np.int64) + np.repeat(np.arange(len(ends), dtype=np.int64), lengths)


class StackIndices(NamedTuple):
    """Where the stacked observations of every step come from (see :func:`stack_indices`)."""

    obs_frames: np.ndarray  # [N, S] frame rows of the observation, oldest first
    next_frames: np.ndarray  # [N, S] frame rows of the n-step next observation
    valid: np.ndarray  # [N] bool: the step has n steps ahead inside its episode (V-D4RL samples only these)
    nstep_rows: np.ndarray  # [N, n] step rows whose rewards make the n-step return (t .. t+n-1)


def stack_indices(episode_ends: np.ndarray, frame_stack: int, nstep: int = 1) -> StackIndices:
    """Frame and step indices of V-D4RL's ``EfficientReplayBuffer`` (drqbc/numpy_replay_buffer.py), for
    every step row of a pixel store.

    Step t of an episode (0-based; frames 0..L of the episode, step t goes from frame t to frame t + 1):
    observation = frames t-S+1 .. t, next observation = frames t+n-S+1 .. t+n, indices below 0 replaced by
    frame 0 (the buffer records S copies of an episode's first frame); n-step reward = sum over k < n of
    gamma^k r[t+k], discount = gamma^n discounts[t+n-1] (:func:`nstep_returns`). The buffer samples only
    steps with t + n <= L (``valid``); for the others the indices are clamped to the episode's last frame
    and step, so they stay in range but must not be sampled.
    """
    s, n = int(frame_stack), int(nstep)
    if s < 1 or n < 1:
        raise PixelStoreError(f"frame_stack and nstep must be at least 1, got {frame_stack} and {nstep}")
    ends = np.asarray(episode_ends, dtype=np.int64)
    _check_episode_ends(ends, int(ends[-1]) if len(ends) else 0, where="episode_ends")
    lengths = np.diff(np.concatenate([[0], ends]))
    starts = ends - lengths
    ep = np.repeat(np.arange(len(ends), dtype=np.int64), lengths)
    t = np.arange(int(ends[-1]), dtype=np.int64) - starts[ep]
    length = lengths[ep]
    base = (starts + np.arange(len(ends)))[ep]  # frame row of each step's episode's frame 0
    k = np.arange(s, dtype=np.int64)
    obs = base[:, None] + np.clip(t[:, None] - s + 1 + k, 0, None)
    nxt = base[:, None] + np.clip(t[:, None] + n - s + 1 + k, 0, length[:, None])
    valid = t + n <= length
    rows = starts[ep][:, None] + np.minimum(t[:, None] + np.arange(n, dtype=np.int64), (length - 1)[:, None])
    return StackIndices(obs, nxt, valid, rows)


def nstep_returns(rewards: np.ndarray, discounts: np.ndarray, nstep_rows: np.ndarray,
                  gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """V-D4RL's n-step targets for each step: (sum_k gamma^k rewards[rows[:, k]], gamma^n
    discounts[rows[:, -1]]), float32, from :attr:`StackIndices.nstep_rows`."""
    rows = np.asarray(nstep_rows)
    n = rows.shape[1]
    weights = np.power(np.float32(gamma), np.arange(n)).astype(np.float32)
    reward = (np.asarray(rewards, dtype=np.float32)[rows] * weights).sum(axis=1).astype(np.float32)
    discount = (np.float32(gamma) ** n * np.asarray(discounts, dtype=np.float32)[rows[:, -1]]).astype(np.float32)
    return reward, discount


# -- writing ----------------------------------------------------------------------------------------


_now = store_dirs.now


def _replaceable(path: Path) -> bool:
    """``overwrite`` replaces an empty folder or a pixel store (complete or not), nothing else."""
    return store_dirs.is_replaceable(path, FORMAT_NAME)


def check_replaceable(path: str | os.PathLike, overwrite: bool) -> None:
    """Raise unless a pixel store may be written at ``path`` (commands call it before their work)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise PixelStoreError(f"{path} already exists (pass overwrite to replace it)")
    if path.exists() and not _replaceable(path):
        raise PixelStoreError(f"{path} is not a pixel store: overwrite replaces pixel stores only")
    if not path.parent.is_dir():
        raise PixelStoreError(f"parent directory {path.parent} does not exist")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete what killed writers of ``path`` left: hidden ``.<name>.tmp-<8 hex>`` directories holding an
    incomplete pixel store written on this host by a process that no longer runs (said on stderr)."""
    return store_dirs.remove_stale_temporaries(path, format_name=FORMAT_NAME, noun="pixel store", log=_log)


def _ref_scores(task: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Reference returns for normalized scores: dm_control suite returns lie in [0, 1000] (score = return / 10
    on V-D4RL's 0-100 scale); other kinds have none here (evaluation picks them by environment)."""
    return (0.0, 1000.0) if task.get("kind") == "dmc" else (None, None)


class PixelStoreWriter(store_dirs.AtomicStoreWriter):
    """Write a pixel store episode by episode, atomically.

    Use as a context manager: on normal exit the store is committed (renamed into place), on an exception
    the temporary directory is removed and nothing appears at ``path``
    (:class:`gta_data.store_dirs.AtomicStoreWriter`)::

        with PixelStoreWriter("walker.zarr", task=task.spec, frame_shape=(3, 84, 84), act_dim=6) as w:
            w.add_episode(frames, actions, rewards, terminals=..., timeouts=...)
    """

    format_name = FORMAT_NAME
    error = PixelStoreError
    kind = "pixel store"
    noun = "pixel store"
    log = _log

    def __init__(self, path: str | os.PathLike, *, task: Mapping[str, Any], frame_shape: tuple[int, int, int],
                 act_dim: int, state_dim: int | None = None, frame_stack: int = 3,
                 renderer: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None,
                 attrs: Mapping[str, Any] | None = None, overwrite: bool = False,
                 flush_frames: int = 4 * FRAME_CHUNK) -> None:
        self.path = Path(path)
        check_replaceable(self.path, overwrite)
        self.frame_shape = tuple(int(x) for x in frame_shape)
        if len(self.frame_shape) != 3 or self.frame_shape[0] != 3 or min(self.frame_shape) < 1:
            raise PixelStoreError(f"frame_shape must be (3, H, W), got {frame_shape}")
        if int(act_dim) < 1 or int(frame_stack) < 1 or (state_dim is not None and int(state_dim) < 1):
            raise PixelStoreError(f"act_dim, frame_stack and state_dim must be positive, got {act_dim}, "
                                  f"{frame_stack}, {state_dim}")
        if not isinstance(task, Mapping) or "kind" not in task:
            raise PixelStoreError(f"task must be a task spec dict with a 'kind', got {task!r}")
        self.act_dim, self.frame_stack = int(act_dim), int(frame_stack)
        self.state_dim = None if state_dim is None else int(state_dim)
        self.flush_frames = int(flush_frames)
        lo, hi = _ref_scores(task)
        self._attrs: dict[str, Any] = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "task": dict(task),
            "frame_stack": self.frame_stack, "frame_shape": list(self.frame_shape), "act_dim": self.act_dim,
            "state_dim": self.state_dim, "ref_min_score": lo, "ref_max_score": hi,
            "renderer": dict(renderer or {}),
            "provenance": {"producer": f"gta-pixel {__version__}", "created": _now(), **dict(provenance or {})},
        }
        for key, value in dict(attrs or {}).items():
            if key in ("format", "format_version", "complete", "num_steps", "num_frames", "num_episodes"):
                raise PixelStoreError(f"attribute {key!r} is reserved")
            self._attrs[key] = value
        self._begin(self.path, self._attrs, overwrite=overwrite)
        self._group.create_group("meta")
        h, w = self.frame_shape[1:]
        self._arrays: dict[str, zarr.Array] = {
            "frames": self._create("frames", (0, 3, h, w), "uint8", (FRAME_CHUNK, 3, h, w)),
            "actions": self._create("actions", (0, self.act_dim), "float32", (1 << 15, self.act_dim)),
        }
        for name in ("rewards", "discounts", "terminals", "timeouts"):
            self._arrays[name] = self._create(name, (0,), STEP_ARRAYS[name], (1 << 16,))
        if self.state_dim is not None:
            self._arrays["states"] = self._create("states", (0, self.state_dim), "float32",
                                                  (1 << 14, self.state_dim))
        self._pending: dict[str, list[np.ndarray]] = {name: [] for name in self._arrays}
        self._pending_frames = 0
        self._rows = {name: 0 for name in self._arrays}
        self._episode_ends: list[int] = []
        self._steps = 0

    def _create(self, name: str, shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...]) -> zarr.Array:
        return self._group.create_array(name, shape=shape, dtype=dtype, chunks=chunks,
                                        dimension_names=_DIMS.get(name, ("step",)), config=_EVERY_CHUNK)

    def add_episode(self, frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, *,
                    discounts: np.ndarray | None = None, terminals: np.ndarray | None = None,
                    timeouts: np.ndarray | None = None, states: np.ndarray | None = None) -> None:
        """Append one episode of L >= 1 steps: frames [L + 1, 3, H, W] uint8 (frame t is the observation
        before step t, frame L the last next observation), actions [L, A], rewards [L]; discounts default to
        0 at a terminal step and 1 elsewhere; without terminals and timeouts the last step is a timeout.
        ``states`` [L + 1, state_dim] go with the frames, and must be given iff the store has a state_dim."""
        self._check_open()
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != self.frame_shape:
            raise PixelStoreError(f"frames must be uint8 [L+1, {', '.join(map(str, self.frame_shape))}], got "
                                  f"{frames.dtype} {list(frames.shape)}")
        length = len(frames) - 1
        if length < 1:
            raise PixelStoreError("an episode needs at least one step (two frames)")
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim == 1 and self.act_dim == 1:
            actions = actions[:, None]
        steps: dict[str, np.ndarray] = {"actions": actions}
        for name, value, default in (("rewards", rewards, None), ("terminals", terminals, False),
                                     ("timeouts", timeouts, None)):
            steps[name] = (np.full(length, default, STEP_ARRAYS[name]) if value is None and default is not None
                           else None if value is None else np.asarray(value, dtype=STEP_ARRAYS[name]).reshape(-1))
        if steps["rewards"] is None:
            raise PixelStoreError("rewards are required")
        if steps["timeouts"] is None:
            steps["timeouts"] = np.zeros(length, bool)
            steps["timeouts"][-1] = not steps["terminals"][-1]
        steps["discounts"] = ((~steps["terminals"]).astype(np.float32) if discounts is None
                              else np.asarray(discounts, dtype=np.float32).reshape(-1))
        if actions.shape != (length, self.act_dim):
            raise PixelStoreError(f"actions must be [{length}, {self.act_dim}] for {length + 1} frames, "
                                  f"got {list(actions.shape)}")
        for name, arr in steps.items():
            if len(arr) != length:
                raise PixelStoreError(f"{name} has {len(arr)} rows for {length + 1} frames (need {length})")
        _check_step_values(steps, np.array([length]), where="episode")
        if (states is None) != (self.state_dim is None):
            raise PixelStoreError("states must be given for every episode iff the store has a state_dim")
        if states is not None:
            states = np.asarray(states, dtype=np.float32)
            if states.shape != (length + 1, self.state_dim):
                raise PixelStoreError(f"states must be [{length + 1}, {self.state_dim}], got {list(states.shape)}")
            if not np.isfinite(states).all():
                raise PixelStoreError("states contain NaN or inf")
            self._pending["states"].append(states)
        self._pending["frames"].append(frames)
        for name, arr in steps.items():
            self._pending[name].append(arr)
        self._steps += length
        self._episode_ends.append(self._steps)
        self._pending_frames += length + 1
        if self._pending_frames >= self.flush_frames:
            self._flush()

    def _flush(self) -> None:
        for name, parts in self._pending.items():
            if not parts:
                continue
            batch = np.concatenate(parts)
            target = self._arrays[name]
            n = self._rows[name]
            target.resize((n + len(batch), *target.shape[1:]))
            target[n:] = batch
            self._rows[name] = n + len(batch)
        self._pending = {name: [] for name in self._arrays}
        self._pending_frames = 0

    @property
    def num_steps(self) -> int:
        return self._steps

    @property
    def num_episodes(self) -> int:
        return len(self._episode_ends)

    def update_provenance(self, **items: Any) -> None:
        """Add provenance known only once the data is written; recorded at :meth:`commit`."""
        self._check_open()
        self._attrs["provenance"].update(items)

    def set_renderer(self, renderer: Mapping[str, Any]) -> None:
        """Record the renderer (known once a worker has drawn a frame); written at :meth:`commit`."""
        self._check_open()
        self._attrs["renderer"] = dict(renderer)

    def commit(self) -> PixelStore:
        """Write the episode index and the final attributes (``complete: true`` last), then rename the store
        into place."""
        return super().commit()

    def _finish(self) -> dict[str, Any]:
        self._flush()
        if not self._episode_ends:
            raise PixelStoreError("refusing to write a pixel store with no episodes")
        ends = np.asarray(self._episode_ends, dtype=np.int64)
        arr = self._group.create_array("meta/episode_ends", shape=ends.shape, dtype="int64", chunks=(1 << 16,),
                                       dimension_names=_DIMS["episode_ends"], config=_EVERY_CHUNK)
        arr[:] = ends
        return {**self._attrs, "num_steps": self._steps, "num_frames": self._steps + len(ends),
                "num_episodes": len(ends), "every_chunk_written": True}

    def _open(self) -> PixelStore:
        return PixelStore.open(self.path)


def write_pixel_store(path: str | os.PathLike, *, frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                      discounts: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray, episode_ends: np.ndarray,
                      states: np.ndarray | None = None, task: Mapping[str, Any], frame_stack: int = 3,
                      renderer: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None,
                      overwrite: bool = False) -> PixelStore:
    """Write a whole dataset (episodes concatenated: F = N + E frames, N steps) to a new pixel store."""
    frames = np.asarray(frames)
    ends = np.asarray(episode_ends, dtype=np.int64).reshape(-1)
    actions = np.asarray(actions, dtype=np.float32)
    n = len(actions)
    _check_episode_ends(ends, n, where="episode_ends")
    if frames.ndim != 4 or len(frames) != n + len(ends):
        raise PixelStoreError(f"frames must be [N + E = {n + len(ends)}, 3, H, W], got {list(frames.shape)}")
    if actions.ndim != 2:
        raise PixelStoreError(f"actions must be [N, act_dim], got {list(actions.shape)}")
    state_dim = None if states is None else int(np.asarray(states).reshape(len(frames), -1).shape[1])
    writer = PixelStoreWriter(path, task=task, frame_shape=frames.shape[1:], act_dim=actions.shape[1],
                              state_dim=state_dim, frame_stack=frame_stack, renderer=renderer, provenance=provenance,
                              overwrite=overwrite)
    with writer:
        start = 0
        for e, end in enumerate(ends.tolist()):
            f0, f1 = start + e, end + e + 1
            writer.add_episode(frames[f0:f1], actions[start:end], np.asarray(rewards)[start:end],
                               discounts=np.asarray(discounts)[start:end], terminals=np.asarray(terminals)[start:end],
                               timeouts=np.asarray(timeouts)[start:end],
                               states=None if states is None else np.asarray(states).reshape(len(frames), -1)[f0:f1])
            start = end
    return PixelStore.open(path)


# -- reading ----------------------------------------------------------------------------------------


def _check_episode_ends(ends: np.ndarray, n: int, *, where: str) -> None:
    store_dirs.check_episode_ends(ends, n, where=where, error=PixelStoreError, unit="steps")


def _check_step_values(steps: Mapping[str, np.ndarray], ends: np.ndarray, *, where: str) -> None:
    """Finite actions, rewards and discounts, discounts in [0, 1], a terminal only on an episode's last step,
    and every episode's last step a terminal or a timeout."""
    for name in ("actions", "rewards", "discounts"):
        if not np.isfinite(steps[name]).all():
            raise PixelStoreError(f"{where}: {name} contain NaN or inf")
    if (steps["discounts"] < 0).any() or (steps["discounts"] > 1).any():
        raise PixelStoreError(f"{where}: discounts outside [0, 1]")
    last = np.zeros(len(steps["terminals"]), bool)
    last[ends - 1] = True
    if (steps["terminals"] & ~last).any():
        bad = int(np.flatnonzero(steps["terminals"] & ~last)[0])
        raise PixelStoreError(f"{where}: terminal at step {bad}, which is not the last step of its episode")
    ended = steps["terminals"][ends - 1] | steps["timeouts"][ends - 1]
    if not ended.all():
        raise PixelStoreError(f"{where}: episode {int(np.flatnonzero(~ended)[0])} ends in neither a terminal "
                              "nor a timeout")


class PixelStore:
    """A validated, read-only view of a pixel store. Open with :meth:`open` (structure checked); the values
    are checked on every :meth:`load`."""

    def __init__(self, path: Path, group: zarr.Group, attrs: dict[str, Any], episode_ends: np.ndarray) -> None:
        self.path, self._group, self.attrs, self.episode_ends = path, group, attrs, episode_ends

    @classmethod
    def open(cls, path: str | os.PathLike) -> PixelStore:
        path = Path(path)
        group, attrs = store_dirs.open_complete_group(
            path, format_name=FORMAT_NAME, format_version=FORMAT_VERSION, error=PixelStoreError, kind="pixel store",
            noun="pixel store", reader="gta-pixel", hints={"gta-trajectory-store": " (a trajectory store: use gta-data)"})
        for key in ("task", "frame_stack", "frame_shape", "act_dim", "state_dim", "num_steps", "num_frames",
                    "num_episodes"):
            if key not in attrs:
                raise PixelStoreError(f"{path} lacks the attribute {key!r}")
        n, f, e = int(attrs["num_steps"]), int(attrs["num_frames"]), int(attrs["num_episodes"])
        if f != n + e:
            raise PixelStoreError(f"{path}: num_frames {f} is not num_steps {n} + num_episodes {e}")
        shape = tuple(int(x) for x in attrs["frame_shape"])
        expected: dict[str, tuple[tuple[int, ...], str]] = {
            "frames": ((f, *shape), "uint8"),
            "actions": ((n, int(attrs["act_dim"])), "float32"),
            **{name: ((n,), dtype) for name, dtype in STEP_ARRAYS.items() if name != "actions"},
            "meta/episode_ends": ((e,), "int64"),
        }
        if attrs["state_dim"] is not None:
            expected["states"] = ((f, int(attrs["state_dim"])), "float32")
        for name, (want_shape, dtype) in expected.items():
            arr = _get_array(group, name, path)
            if arr.shape != want_shape:
                raise PixelStoreError(f"{path}: {name} has shape {arr.shape}, expected {want_shape} (lengths disagree)")
            if arr.dtype != np.dtype(dtype):
                raise PixelStoreError(f"{path}: {name} has dtype {arr.dtype}, expected {dtype}")
        store = cls(path, group, attrs, np.zeros(0, np.int64))
        ends = store._read("meta/episode_ends").astype(np.int64)
        try:
            _check_episode_ends(ends, n, where="meta/episode_ends")
        except PixelStoreError as exc:
            raise PixelStoreError(f"{path}: {exc}") from None
        store.episode_ends = ends
        return store

    # -- metadata ----------------------------------------------------------------------------------

    @property
    def task(self) -> dict[str, Any]:
        return dict(self.attrs["task"])

    @property
    def frame_stack(self) -> int:
        return int(self.attrs["frame_stack"])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        c, h, w = (int(x) for x in self.attrs["frame_shape"])
        return c, h, w

    @property
    def act_dim(self) -> int:
        return int(self.attrs["act_dim"])

    @property
    def state_dim(self) -> int | None:
        return None if self.attrs["state_dim"] is None else int(self.attrs["state_dim"])

    @property
    def num_steps(self) -> int:
        return int(self.attrs["num_steps"])

    @property
    def num_frames(self) -> int:
        return int(self.attrs["num_frames"])

    @property
    def num_episodes(self) -> int:
        return int(self.attrs["num_episodes"])

    @property
    def renderer(self) -> dict[str, Any]:
        return dict(self.attrs.get("renderer") or {})

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.attrs.get("provenance") or {})

    @property
    def ref_scores(self) -> tuple[float, float] | None:
        lo, hi = self.attrs.get("ref_min_score"), self.attrs.get("ref_max_score")
        return None if lo is None or hi is None else (float(lo), float(hi))

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self.episode_ends])).astype(np.int64)

    # -- reading -----------------------------------------------------------------------------------

    def _read(self, key: str, selection: Any = slice(None)) -> np.ndarray:
        return store_dirs.read_array(self._group, key, self.path, PixelStoreError, selection=selection,
                                     every_chunk_written=bool(self.attrs.get("every_chunk_written")))

    def frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frame rows ``start:stop`` [.., 3, H, W] uint8 (all by default)."""
        return self._read("frames", slice(start, stop))

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, float64."""
        return np.add.reduceat(self._read("rewards").astype(np.float64), self.episode_starts)

    def load(self, states: bool = True) -> PixelData:
        """Everything in one read (``states=False`` leaves the states out); raises on NaN/inf, discounts
        outside [0, 1], a terminal before an episode's last step or an episode that ends in neither a
        terminal nor a timeout."""
        steps = {name: self._read(name) for name in STEP_ARRAYS}
        _check_step_values(steps, self.episode_ends, where=str(self.path))
        state_arr = None
        if states and self.state_dim is not None:
            state_arr = self._read("states")
            if not np.isfinite(state_arr).all():
                raise PixelStoreError(f"{self.path}: states contain NaN or inf")
        return PixelData(frames=self._read("frames"), episode_ends=self.episode_ends.copy(), states=state_arr,
                         **steps)

    def validate(self) -> PixelStore:
        """Full check of the values: reads every array once."""
        self.load()
        return self

    def __repr__(self) -> str:
        return (f"PixelStore({str(self.path)!r}, task={self.task!r}, steps={self.num_steps}, "
                f"episodes={self.num_episodes}, frames={self.num_frames})")


def _get_array(group: zarr.Group, name: str, path: Path) -> zarr.Array:
    return store_dirs.get_array(group, name, path, PixelStoreError)


def open_pixel_store(path: str | os.PathLike) -> PixelStore:
    """Open and structurally validate a pixel store (see :class:`PixelStore`)."""
    return PixelStore.open(path)
