"""V-D4RL's files: readers into pixel-store episodes, and writers of the exact layouts (for tests).

V-D4RL (Lu et al., 2022; github.com/conglu1997/v-d4rl) ships each dataset twice:

- **84px** ``*.hdf5`` shards (what DrQ+BC reads, ``drqbc/utils.py``): datasets ``observation`` uint8
  [R, 3, 84, 84] (one frame per row, channels first), ``action`` float32 [R, A], ``reward`` [R], ``discount``
  [R], ``step_type`` [R] (0 first, 1 mid, 2 last), gzip-compressed. Rows of consecutive episodes are
  concatenated; ``conversion_scripts/split_hdf5_shards.py`` cuts them into shards named ``0.hdf5``,
  ``1.hdf5``, ... with ``np.array_split``, so a shard may begin or end mid-episode.
- **64px** ``*.npz`` episodes (what offline DreamerV2 reads), one file ``<time>-<uuid>-<len>.npz`` per
  episode: ``image`` uint8 [T, 64, 64, 3] (channels last), ``action``, ``reward``, ``discount``, ``is_first``,
  ``is_last``, ``is_terminal``, and in the released files the proprioceptive state keys (walker:
  ``orientations``, ``height``, ``velocity``).

Both put a step's action, reward and discount on the row of the frame it *produced* (dm_env's convention):
row 0 is the reset frame with a zero action and reward 0. The pixel store keeps them on the row of the frame
the step *starts* from, so reading drops row 0's action/reward/discount and shifts the others back by one.

Reading the shards: files in natural name order (numbers compared as numbers: ``2.hdf5`` before
``10.hdf5``, which is the order ``split_hdf5_shards.py`` wrote them in; V-D4RL's own loader sorts the names as
strings, which interleaves shards from the 11th on). An episode starts at a ``first`` row. Where a shard
boundary cuts an episode there are two ways to read it (``join_shards``):

- **as V-D4RL's loader** (the default; ``drqbc/utils.py``, ``load_offline_dataset_into_buffer``): each shard
  on its own. A shard whose first row is not a ``first`` row is skipped whole (the loader fails on that row
  and skips the file, complete episodes later in it included); an episode still open at the end of a shard
  ends there, in a timeout. The store then holds exactly the transitions V-D4RL's DrQ+BC samples (tested
  against a plain re-implementation of its loader and replay buffer); only the episodes' order differs where
  string order differs from natural order, and V-D4RL's stop after 1M rows (its buffer size) is not applied.
- **joined** (``join_shards=True``): one stream of rows across files, so an episode still open at the end of
  a shard continues in the next. Rows before the first ``first`` row (data that begins mid-episode) become an
  episode *fragment* whose first row serves as its reset frame; an episode whose ``last`` row is missing
  ends in a timeout. This keeps every row of the files.

A terminal is a ``last`` row with discount 0 (none in V-D4RL's locomotion data). Fragments, cut episodes and
skipped shards are counted in the import's provenance.

The 64px episodes can be resized to 84 px as V-D4RL's ``npz_to_hdf5.py`` does (OpenCV ``INTER_CUBIC``): here
a separable bicubic in numpy with OpenCV's kernel (Keys, a = -0.75), pixel-centre mapping and edge
replication, computed in float64 and rounded to the nearest integer; OpenCV's fixed-point arithmetic may
differ from it by one grey level at some pixels.

h5py is needed only for the hdf5 files (the optional extra ``vd4rl``).
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gta_pixel.errors import VD4RLError

FIRST, MID, LAST = 0, 1, 2
HDF5_KEYS = ("observation", "action", "reward", "discount", "step_type")
NPZ_KEYS = ("image", "action", "reward", "discount", "is_first", "is_last", "is_terminal")


@dataclass
class Episode:
    """One episode in the pixel store's convention: frames [L + 1, 3, H, W] uint8, per-step arrays [L]."""

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    discounts: np.ndarray
    terminal: bool = False  # the last step terminates (else the episode ends in a timeout)
    fragment: bool = False  # its first frame is not a reset frame (the data began mid-episode)
    cut: bool = False  # the data ended before the episode's last row
    states: np.ndarray | None = None  # [L + 1, state_dim] float32
    source: list[str] = field(default_factory=list)  # files it was read from

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class ReadStats:
    """What a reader met on the way, for the import's provenance."""

    files: list[str] = field(default_factory=list)
    episodes: int = 0
    fragments: int = 0
    cut: int = 0
    dropped_rows: int = 0  # rows that made no step (a lone frame before a new episode)
    skipped_files: list[str] = field(default_factory=list)  # shards beginning mid-episode, read as V-D4RL does
    skipped_rows: int = 0  # their rows

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "episodes": self.episodes, "fragments": self.fragments, "cut": self.cut,
                "dropped_rows": self.dropped_rows, "skipped_files": self.skipped_files,
                "skipped_rows": self.skipped_rows}


def natural_key(path: Path) -> list[Any]:
    """Sort key comparing the digit runs of a file name as numbers (``2.hdf5`` before ``10.hdf5``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _files(directory: str | Path, pattern: str) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise VD4RLError(f"{directory} is not a directory")
    files = sorted(directory.glob(pattern), key=natural_key)
    if not files:
        raise VD4RLError(f"{directory} has no {pattern} files")
    return files


# -- 84px hdf5 shards -------------------------------------------------------------------------------------


def _h5py():
    try:
        import h5py
    except ImportError:
        raise VD4RLError("reading V-D4RL's hdf5 shards needs h5py: pip install 'gta-pixel[vd4rl]'") from None
    return h5py


def read_hdf5_shard(path: str | Path) -> dict[str, np.ndarray]:
    """The five datasets of one shard, checked for presence, dtype class and equal lengths."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in HDF5_KEYS if k not in f]
            if missing:
                raise VD4RLError(f"{path} lacks the dataset(s) {', '.join(missing)} (has {', '.join(f.keys())})")
            data = {k: np.asarray(f[k][:]) for k in HDF5_KEYS}
    except OSError as exc:
        raise VD4RLError(f"cannot read {path} ({exc})".splitlines()[0]) from None
    rows = len(data["step_type"])
    for key, arr in data.items():
        if len(arr) != rows:
            raise VD4RLError(f"{path}: {key} has {len(arr)} rows, step_type {rows}")
    obs = data["observation"]
    if obs.dtype != np.uint8 or obs.ndim != 4 or obs.shape[1] != 3:
        raise VD4RLError(f"{path}: observation must be uint8 [R, 3, H, W], got {obs.dtype} {list(obs.shape)}")
    if data["action"].ndim == 1:
        data["action"] = data["action"][:, None]
    if not np.isin(data["step_type"], (FIRST, MID, LAST)).all():
        raise VD4RLError(f"{path}: step_type has values other than 0, 1, 2")
    return data


class _EpisodeAssembler:
    """Turns a stream of row blocks (dm_env rows, possibly cut anywhere) into episodes."""

    def __init__(self, stats: ReadStats) -> None:
        self.stats = stats
        self.blocks: list[dict[str, np.ndarray]] = []
        self.sources: list[str] = []
        self.fragment = False

    def open(self, fragment: bool) -> None:
        self.blocks, self.sources, self.fragment = [], [], fragment

    def add(self, block: dict[str, np.ndarray], source: str) -> None:
        self.blocks.append(block)
        if source not in self.sources:
            self.sources.append(source)

    def close(self, ended: bool) -> Episode | None:
        """The open episode, ended by its ``last`` row (``ended``) or cut; None if it has no step."""
        if not self.blocks:
            return None
        rows = {k: np.concatenate([b[k] for b in self.blocks]) for k in self.blocks[0]}
        self.blocks = []
        if len(rows["frames"]) < 2:
            self.stats.dropped_rows += len(rows["frames"])
            return None
        discounts = rows["discount"][1:].astype(np.float32)
        terminal = bool(ended and discounts[-1] == 0.0)
        self.stats.episodes += 1
        self.stats.fragments += int(self.fragment)
        self.stats.cut += int(not ended)
        states = rows["states"].astype(np.float32) if "states" in rows else None
        return Episode(frames=rows["frames"], actions=rows["action"][1:].astype(np.float32),
                       rewards=rows["reward"][1:].astype(np.float32), discounts=discounts, terminal=terminal,
                       fragment=self.fragment, cut=not ended, states=states, source=list(self.sources))


def iter_hdf5_episodes(directory: str | Path, stats: ReadStats | None = None, *,
                       join_shards: bool = False) -> Iterator[Episode]:
    """Episodes of a directory of V-D4RL 84px shards, in order: each shard on its own as V-D4RL's loader reads
    them, or with ``join_shards`` episodes continued across shards (see the module docstring); one shard in
    memory at a time."""
    stats = stats if stats is not None else ReadStats()
    asm = _EpisodeAssembler(stats)
    is_open = False
    for path in _files(directory, "*.hdf5"):
        data = read_hdf5_shard(path)
        stats.files.append(path.name)
        st = data["step_type"]
        rows = len(st)
        if not join_shards and rows and st[0] != FIRST:
            stats.skipped_files.append(path.name)
            stats.skipped_rows += rows
            continue
        # Row i starts an episode if it is a first row; the rows after a last row start a fragment.
        starts = set(np.flatnonzero(st == FIRST).tolist())
        after_last = (np.flatnonzero(st == LAST) + 1).tolist()
        fragment_starts = {i for i in after_last if i < rows and st[i] != FIRST}
        if not is_open and rows and st[0] != FIRST:
            fragment_starts.add(0)
        cuts = sorted(starts | fragment_starts | {i for i in after_last if i < rows} | {0, rows})
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            if a == b:
                continue
            if a in starts or a in fragment_starts:
                if is_open:
                    episode = asm.close(ended=False)
                    if episode is not None:
                        yield episode
                asm.open(fragment=a in fragment_starts)
                is_open = True
            block = {"frames": data["observation"][a:b], "action": data["action"][a:b],
                     "reward": data["reward"][a:b], "discount": data["discount"][a:b]}
            asm.add(block, path.name)
            if st[b - 1] == LAST:
                episode = asm.close(ended=True)
                is_open = False
                if episode is not None:
                    yield episode
        if is_open and not join_shards:  # V-D4RL: an episode ends with its shard
            episode = asm.close(ended=False)
            is_open = False
            if episode is not None:
                yield episode
    if is_open:
        episode = asm.close(ended=False)
        if episode is not None:
            yield episode


def write_hdf5_shards(directory: str | Path, episodes: Iterable[Episode], shards: int = 1) -> list[Path]:
    """Write episodes in V-D4RL's 84px layout: all rows concatenated (row 0 of an episode: its reset frame,
    zero action, reward 0, discount 1, step_type 0; its last row step_type 2), split into ``shards`` files
    ``0.hdf5``, ``1.hdf5``, ... with ``np.array_split`` (so shards may cut episodes), gzip as V-D4RL."""
    h5py = _h5py()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = _episode_rows(episodes)
    rows["observation"] = rows.pop("frames")
    written = []
    parts = {k: np.array_split(v, shards) for k, v in rows.items()}
    for i in range(shards):
        path = directory / f"{i}.hdf5"
        with h5py.File(path, "w") as f:
            for key in HDF5_KEYS:
                f.create_dataset(key, data=parts[key][i], compression="gzip")
        written.append(path)
    return written


def _episode_rows(episodes: Iterable[Episode]) -> dict[str, np.ndarray]:
    """dm_env rows of episodes, concatenated (the inverse of what the readers do)."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("frames", "action", "reward", "discount", "step_type")}
    for ep in episodes:
        length = len(ep)
        act = np.asarray(ep.actions, dtype=np.float32)
        out["frames"].append(np.asarray(ep.frames, dtype=np.uint8))
        out["action"].append(np.concatenate([np.zeros((1, act.shape[1]), np.float32), act]))
        out["reward"].append(np.concatenate([[0.0], ep.rewards]).astype(np.float32))
        out["discount"].append(np.concatenate([[1.0], ep.discounts]).astype(np.float32))
        st = np.full(length + 1, MID, np.int64)
        st[0], st[-1] = FIRST, LAST
        out["step_type"].append(st)
    if not out["frames"]:
        raise VD4RLError("no episodes to write")
    return {k: np.concatenate(v) for k, v in out.items()}


# -- 64px npz episodes -------------------------------------------------------------------------------------


def cubic_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices [out, 4] and weights [out, 4] of OpenCV's INTER_CUBIC along one axis: pixel-centre
    mapping x = (i + 0.5) in/out - 0.5, Keys' kernel with a = -0.75, indices clamped to the edge."""
    a = -0.75
    x = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    x0 = np.floor(x).astype(np.int64)
    f = x - x0
    d = np.stack([1 + f, f, 1 - f, 2 - f], axis=1)  # distances to the 4 taps x0-1 .. x0+2
    w = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a)
    idx = np.clip(x0[:, None] + np.arange(-1, 3), 0, in_size - 1)
    return idx, w


def resize_bicubic(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 images [..., H, W, C] (channels last) to size x size with :func:`cubic_weights`, rounded
    to the nearest integer and clipped to [0, 255]."""
    images = np.asarray(images)
    h, w = images.shape[-3], images.shape[-2]
    iy, wy = cubic_weights(h, size)
    ix, wx = cubic_weights(w, size)
    x = images.astype(np.float64)
    x = np.einsum("...hpwc,hp->...hwc", x[..., iy, :, :], wy)  # rows: [..., size, 4, W, C] -> [..., size, W, C]
    x = np.einsum("...hwpc,wp->...hwc", x[..., :, ix, :], wx)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def read_npz_episode(path: str | Path, size: int | None = None, state_keys: list[str] | None = None) -> Episode:
    """One 64px episode file: frames as [T, 3, H, W] (resized to ``size`` if given), steps from rows 1..T-1,
    and, when ``state_keys`` are given, those keys flattened and concatenated as the state of each frame."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise VD4RLError(f"{path} lacks the key(s) {', '.join(missing)} (has {', '.join(f.files)})")
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise VD4RLError(f"cannot read {path} ({exc})".splitlines()[0]) from None
    image = data["image"]
    t = len(image)
    if image.dtype != np.uint8 or image.ndim != 4 or image.shape[-1] != 3:
        raise VD4RLError(f"{path}: image must be uint8 [T, H, W, 3], got {image.dtype} {list(image.shape)}")
    for key in NPZ_KEYS:
        if len(data[key]) != t:
            raise VD4RLError(f"{path}: {key} has {len(data[key])} rows, image {t}")
    if t < 2:
        raise VD4RLError(f"{path}: an episode needs at least 2 rows, has {t}")
    if not data["is_first"][0] or data["is_first"][1:].any():
        raise VD4RLError(f"{path}: is_first must be true on row 0 only")
    if data["is_last"][:-1].any():
        raise VD4RLError(f"{path}: is_last is true before the last row")
    if data["is_terminal"][:-1].any():
        raise VD4RLError(f"{path}: is_terminal is true before the last row")
    if size is not None and (image.shape[1], image.shape[2]) != (size, size):
        image = resize_bicubic(image, size)
    action = data["action"].reshape(t, -1)
    states = None
    if state_keys:
        absent = [k for k in state_keys if k not in data]
        if absent:
            raise VD4RLError(f"{path} has no state key(s) {', '.join(absent)}")
        states = np.concatenate([np.asarray(data[k], dtype=np.float32).reshape(t, -1) for k in state_keys], axis=1)
    return Episode(frames=np.ascontiguousarray(image.transpose(0, 3, 1, 2)), actions=action[1:].astype(np.float32),
                   rewards=data["reward"][1:].astype(np.float32), discounts=data["discount"][1:].astype(np.float32),
                   terminal=bool(data["is_terminal"][-1]), cut=not bool(data["is_last"][-1]), states=states,
                   source=[Path(path).name])


def npz_state_keys(path: str | Path) -> list[str]:
    """The keys of an episode file beyond V-D4RL's standard ones (the proprioceptive state), in file order."""
    with np.load(path, allow_pickle=False) as f:
        return [k for k in f.files if k not in NPZ_KEYS]


def iter_npz_episodes(directory: str | Path, size: int | None = None, states: bool = False,
                      stats: ReadStats | None = None) -> Iterator[Episode]:
    """Episodes of a directory of V-D4RL 64px ``*.npz`` files in name order (their names begin with a
    timestamp); ``size`` resizes the frames (84 for DrQ+BC), ``states`` keeps the proprioceptive keys."""
    stats = stats if stats is not None else ReadStats()
    files = _files(directory, "*.npz")
    keys = npz_state_keys(files[0]) if states else None
    if states and not keys:
        raise VD4RLError(f"{files[0]} has no state keys beyond {', '.join(NPZ_KEYS)}")
    for path in files:
        episode = read_npz_episode(path, size=size, state_keys=keys)
        stats.files.append(path.name)
        stats.episodes += 1
        stats.cut += int(episode.cut)
        yield episode


def write_npz_episodes(directory: str | Path, episodes: Iterable[Episode],
                       extra: Iterable[dict[str, np.ndarray]] | None = None) -> list[Path]:
    """Write episodes in V-D4RL's 64px layout, one ``<time>-<uuid>-<len>.npz`` per episode (``len`` = rows,
    as ``hdf5_to_npz.py`` names them): image [T, H, W, 3], action, reward, discount (row 0: zero action,
    reward 0, discount 1), is_first, is_last, is_terminal; ``extra`` adds per-episode keys (state arrays)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extras = list(extra) if extra is not None else None
    written = []
    base = _dt.datetime(2022, 6, 1)
    for i, ep in enumerate(episodes):
        rows = _episode_rows([ep])
        t = len(rows["frames"])
        is_last = np.zeros(t, bool)
        is_last[-1] = True
        is_terminal = np.zeros(t, bool)
        is_terminal[-1] = ep.terminal
        arrays = {"image": rows["frames"].transpose(0, 2, 3, 1), "action": rows["action"], "reward": rows["reward"],
                  "discount": rows["discount"], "is_first": rows["step_type"] == FIRST, "is_last": is_last,
                  "is_terminal": is_terminal, **(extras[i] if extras else {})}
        stamp = (base + _dt.timedelta(seconds=i)).strftime("%Y%m%dT%H%M%S")
        path = directory / f"{stamp}-{uuid.uuid4().hex}-{t}.npz"
        np.savez_compressed(path, **arrays)
        written.append(path)
    return written


# -- import into a pixel store ---------------------------------------------------------------------------


def infer_task_name(directory: str | Path) -> str | None:
    """The suite task a V-D4RL path names (``vd4rl_data/main/walker_walk/medium/84px`` -> ``walker_walk``)."""
    for part in reversed(Path(directory).resolve().parts):
        if re.fullmatch(r"(walker|cheetah|humanoid|quadruped|hopper|cartpole|finger|reacher|cup)_[a-z_]+", part):
            return part
    return None


def import_vd4rl(directory: str | Path, out: str | Path, *, task: str | None = None, frame_stack: int = 3,
                 size: int | None = None, states: bool = False, join_shards: bool = False, overwrite: bool = False,
                 progress=None):
    """Import a V-D4RL directory (``*.hdf5`` shards, else ``*.npz`` episodes) into a pixel store at ``out``.
    ``task`` is the suite task name (inferred from the path when it names one); ``size`` resizes npz frames
    (default: 84 for 64px npz episodes, as V-D4RL's DrQ+BC data); ``states`` keeps npz state keys;
    ``join_shards`` continues episodes across hdf5 shards instead of reading each shard as V-D4RL does."""
    from gta_pixel.pixelstore import PixelStore, PixelStoreWriter, check_replaceable
    from gta_pixel.tasks import parse_task, simulator_versions

    directory = Path(directory)
    if not directory.is_dir():
        raise VD4RLError(f"{directory} is not a directory")
    check_replaceable(out, overwrite)
    name = task or infer_task_name(directory)
    if name is None:
        raise VD4RLError(f"cannot tell the task from {directory}: pass --task (e.g. walker_walk)")
    stats = ReadStats()
    npz_size = 84 if size is None else int(size)
    if any(directory.glob("*.hdf5")):
        if states:
            raise VD4RLError("the 84px hdf5 shards hold no states (the 64px npz episodes do)")
        fmt, episodes = "hdf5", iter_hdf5_episodes(directory, stats, join_shards=join_shards)
    else:
        fmt, episodes = "npz", iter_npz_episodes(directory, size=npz_size, states=states, stats=stats)
    first = next(episodes, None)
    if first is None:
        hint = (f" ({len(stats.skipped_files)} shard(s) begin mid-episode, which V-D4RL's loader skips; "
                "--join-shards reads them)" if stats.skipped_files else "")
        raise VD4RLError(f"{directory} holds no episode with a step{hint}")
    spec = parse_task(name, size=int(first.frames.shape[-1]))
    writer = PixelStoreWriter(out, task=spec, frame_shape=first.frames.shape[1:], act_dim=first.actions.shape[1],
                              state_dim=None if first.states is None else first.states.shape[1],
                              frame_stack=frame_stack, renderer={"source": "V-D4RL files"}, overwrite=overwrite)
    with writer:
        for episode in _chain(first, episodes):
            terminals = np.zeros(len(episode), bool)
            terminals[-1] = episode.terminal
            writer.add_episode(episode.frames, episode.actions, episode.rewards, discounts=episode.discounts,
                               terminals=terminals, states=episode.states)
            if progress is not None:
                progress(len(episode))
        writer.update_provenance(source="vd4rl", vd4rl_dir=str(directory.resolve()), vd4rl_format=fmt,
                                 resized_to=npz_size if fmt == "npz" else None,
                                 shards=None if fmt == "npz" else "joined" if join_shards else "as V-D4RL",
                                 read=stats.as_dict(),
                                 simulators=simulator_versions())
    return PixelStore.open(out)


def _chain(first: Episode, rest: Iterator[Episode]) -> Iterator[Episode]:
    yield first
    yield from rest
