"""SynthER baseline (GTA Sec. 5.1 and appendix C.1; Lu et al. 2023, "Synthetic Experience Replay").

An unconditional EDM (the shared :mod:`gta_diffusion.edm`, GTA Table 7 = SynthER's settings) over single
transition vectors x = [s, a, r, s', terminal] (D = 2 obs + act + 2; 42 for halfcheetah), modelled as
``[B, 1, D]`` by SynthER's residual MLP (``networks.ResidualMLPDenoiser``, preset ``synther``: width 2048,
6 blocks, random-Fourier noise embedding, 25,566,890 parameters for D = 42; ``synther-small`` for CPU).

Data: every column is z-scored with the statistics of the training store except the terminal column,
which stays in {0, 1} (SynthER's ``skip_dims`` for the terminal). Training reuses
:class:`gta_diffusion.training.Trainer` (AdamW, cosine schedule, clipping, EMA, atomic checkpoints, exact
resume, metrics JSONL) through the small adapter :class:`SynthERTrainer`. Defaults follow SynthER
(conglu1997/SynthER): 100k steps, batch 1024 (256 for stores under 800k transitions), AdamW lr 3e-4 with
betas (0.9, 0.99), no weight decay, cosine annealing without warm-up, gradient clipping at 1.0.
SynthER's EMA is decay 0.995 applied every 10 steps (ema_pytorch); the shared Trainer updates the EMA
every step, so we use the per-step decay with the same time constant, 0.995 ** (1/10) = 0.999499.

Sampling starts from pure noise (``edm_sampler`` with cond=None, start_index=0, 128 stochastic Heun
steps) in large fixed-size batches (SynthER: 100k); every transition j has its own seed
``seed * 2**32 + j`` (``noise.SeededNoise``), so it does not depend on the batch size. The terminal
column is thresholded at 0.5. 5M transitions by default.

What ``episode_ends`` means in a SynthER store: generated transitions are independent draws, not
trajectories. They are written in sampling order as segments of at most ``segment_length`` transitions
(default 1000), cut after every generated terminal (the store requires terminals at segment ends) and at
the end of each sampling batch; a segment end that is not a terminal is flagged as a timeout. Segment
boundaries and the order inside a segment carry NO temporal meaning (``s'_t`` is not ``s_{t+1}``): use a
SynthER store for transition-level consumers (Q-learning, data-quality metrics), not for windows or
sequences. The provenance says so (``transition_level: true``). Per-segment metadata: ``seed`` of the
segment's first transition (the others follow consecutively).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gta_data import StoreError, StoreWriter, TrajectoryStore, Transitions
from gta_diffusion._version import __version__
from gta_diffusion.augmentation import check_output_store, clip_actions
from gta_diffusion.checkpoint import (
    CONFIG_NAME,
    latest_checkpoint,
    load_checkpoint,
    read_config,
    write_json_atomic,
)
from gta_diffusion.config import SMALL_DATASET, SYNTHER_TRAIN, merge
from gta_diffusion.edm import EDMConfig, edm_sampler
from gta_diffusion.errors import DiffusionError
from gta_diffusion.networks import PRESETS, count_parameters
from gta_diffusion.noise import SeededNoise
from gta_diffusion.training import TrainConfig, Trainer, build_denoiser, check_run_data, check_train_config

__all__ = [
    "MODEL_KIND",
    "TransitionNormalizer",
    "transition_vectors",
    "fit_transition_normalizer",
    "vectors_to_transitions",
    "segment_ends",
    "TransitionSet",
    "SynthERTrainer",
    "synther_train_config",
    "create_synther_trainer",
    "load_synther",
    "SampleConfig",
    "sample_normalized",
    "sample_transitions",
    "generate_synther",
]

MODEL_KIND = "synther"  # config.json "model" entry that marks a SynthER run directory


@dataclass
class TransitionNormalizer:
    """Per-column z-scoring of [s, a, r, s', terminal]; the terminal column has mean 0, std 1 (identity)."""

    mean: np.ndarray  # [D] float64
    std: np.ndarray  # [D] float64
    obs_dim: int
    act_dim: int
    env_id: str

    @property
    def transition_dim(self) -> int:
        return 2 * self.obs_dim + self.act_dim + 2

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "obs_dim": self.obs_dim,
                "act_dim": self.act_dim, "env_id": self.env_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransitionNormalizer:
        return cls(mean=np.asarray(d["mean"], np.float64), std=np.asarray(d["std"], np.float64),
                   obs_dim=int(d["obs_dim"]), act_dim=int(d["act_dim"]), env_id=str(d["env_id"]))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * self.std + self.mean).astype(np.float32)


def transition_vectors(data: Transitions) -> np.ndarray:
    """[N, D] float32 rows [s, a, r, s', terminal] (SynthER's ``make_inputs`` with modelled terminals)."""
    return np.concatenate(
        [data.observations, data.actions, data.rewards[:, None], data.next_observations,
         data.terminals[:, None].astype(np.float32)], axis=1,
    ).astype(np.float32)


def fit_transition_normalizer(data: Transitions, env_id: str) -> TransitionNormalizer:
    x = transition_vectors(data).astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    std = np.where(std < 1e-6, 1.0, std)  # constant columns stay as they are, no division by ~0
    mean[-1], std[-1] = 0.0, 1.0  # terminal: not z-scored
    return TransitionNormalizer(mean=mean, std=std, obs_dim=data.obs_dim, act_dim=data.act_dim, env_id=env_id)


def vectors_to_transitions(x: np.ndarray, norm: TransitionNormalizer, threshold: float = 0.5) -> Transitions:
    """Generated vectors [N, D] in original units -> transitions; terminal = (terminal column > threshold).
    Timeouts are all False here; :func:`segment_ends` decides the segment ends."""
    x = np.asarray(x, dtype=np.float32)
    o, a = norm.obs_dim, norm.act_dim
    if x.ndim != 2 or x.shape[1] != norm.transition_dim:
        raise DiffusionError(f"expected [N, {norm.transition_dim}] vectors, got shape {x.shape}")
    return Transitions(
        observations=x[:, :o], actions=x[:, o : o + a], rewards=x[:, o + a],
        next_observations=x[:, o + a + 1 : 2 * o + a + 1], terminals=x[:, -1] > threshold,
        timeouts=np.zeros(len(x), dtype=bool),
    )


def segment_ends(terminals: np.ndarray, segment_length: int) -> np.ndarray:
    """Exclusive ends of segments of at most ``segment_length`` rows, cut after every terminal row."""
    n = len(terminals)
    cuts = np.union1d(np.arange(segment_length, n, segment_length), np.flatnonzero(terminals) + 1)
    return np.union1d(cuts, [n]).astype(np.int64)


@dataclass(frozen=True)
class _NoWindows:
    """Stands in for the window config the shared Trainer reads (transitions are single rows)."""

    horizon: int = 0


class TransitionSet:
    """The z-scored transition vectors of a store on the device, sampled uniformly with replacement.

    Quacks like ``data.WindowSet`` for :class:`gta_diffusion.training.Trainer`: ``sample`` returns
    ``([B, 1, D], None)`` -- one row per transition and no condition (unconditional model)."""

    def __init__(self, data: Transitions, norm: TransitionNormalizer, device: torch.device | str = "cpu") -> None:
        if data.obs_dim != norm.obs_dim or data.act_dim != norm.act_dim:
            raise DiffusionError(
                f"data has obs_dim {data.obs_dim}, act_dim {data.act_dim}; the model expects "
                f"{norm.obs_dim}, {norm.act_dim}"
            )
        self.norm, self.cfg, self.device = norm, _NoWindows(), torch.device(device)
        self.x = torch.from_numpy(norm.normalize(transition_vectors(data))).to(self.device)  # [N, D]

    def __len__(self) -> int:
        return self.x.shape[0]

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
        """A uniform random batch (with replacement) [B, 1, D]. The indices are drawn on the device from
        ``generator`` and gathered there: no host sync, so a whole-step CUDA graph can capture it (with the
        generator registered to the graph, every replay draws a new batch)."""
        pick = torch.randint(len(self), (batch_size,), device=self.device, generator=generator)  # [B]
        return self.x.index_select(0, pick).unsqueeze(1), None  # [B, 1, D]


class SynthERTrainer(Trainer):
    """The shared Trainer on single transition rows: every column counts in the loss (the window loss mask
    that zeroes the padding of a last window row does not apply)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], data: TransitionSet, *,
                 device: torch.device) -> None:
        super().__init__(run_dir, config, data, device=device)
        d = data.norm.transition_dim
        self.mask = torch.ones(1, d, device=device)  # [1, D]
        self.inv_count = 1.0 / (d * self.local_batch)


def synther_train_config(num_transitions: int, *, batch_size: int | None = None, **overrides: Any) -> TrainConfig:
    """SynthER's training defaults (``config.SYNTHER_TRAIN``, over TrainConfig's); ``batch_size`` None picks 1024,
    or 256 for stores under 800k transitions. Keyword overrides (None: not given) replace any TrainConfig field."""
    if batch_size is None:
        batch_size = 256 if num_transitions < SMALL_DATASET else 1024
    return merge(TrainConfig, SYNTHER_TRAIN, {"batch_size": batch_size}, overrides)


def _open_data(data_path: str | Path) -> tuple[TrajectoryStore, Transitions]:
    store = TrajectoryStore.open(data_path)
    return store, store.load(names=())


def _check_run(config: dict[str, Any], run_dir: str | Path) -> None:
    kind = config.get("model", "gta")
    if kind != MODEL_KIND:
        raise DiffusionError(f"{run_dir} holds a {kind} run, not a SynthER run")


def create_synther_trainer(run_dir: str | Path, data_path: str | Path | None, cfg: TrainConfig | None = None,
                           edm: EDMConfig | None = None, *, device: str | torch.device = "cpu") -> SynthERTrainer:
    """Start a new SynthER run in ``run_dir`` or resume the one there (its saved config wins; ``data_path``
    None means the store recorded in it). ``cfg`` None: :func:`synther_train_config` for the store."""
    run_dir, device = Path(run_dir), torch.device(device)
    if (run_dir / CONFIG_NAME).exists():
        config = read_config(run_dir)
        _check_run(config, run_dir)
        data_path = data_path or config["data"]["path"]
        store, data = _open_data(data_path)
        norm = TransitionNormalizer.from_dict(config["normalizer"])
        check_run_data(store, norm, data_path, run_dir)
        trainer = SynthERTrainer(run_dir, config, TransitionSet(data, norm, device), device=device)
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            trainer.load(ckpt)
        return trainer
    if data_path is None:
        raise DiffusionError(f"{run_dir} holds no run to resume; give the training data")
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise DiffusionError(f"{run_dir} exists and is not a gta-diffusion run directory")
    store, data = _open_data(data_path)
    cfg = cfg or synther_train_config(store.num_transitions)
    edm = edm or EDMConfig()
    check_train_config(cfg)
    if PRESETS.get(cfg.preset, {}).get("kind") != "residual_mlp":
        synther_presets = sorted(k for k, v in PRESETS.items() if v["kind"] == "residual_mlp")
        raise DiffusionError(f"SynthER needs a residual-MLP preset ({', '.join(synther_presets)}), got {cfg.preset!r}")
    norm = fit_transition_normalizer(data, store.env_id)
    network = {"preset": cfg.preset, "overrides": dict(cfg.network_overrides),
               "transition_dim": norm.transition_dim, "horizon_rows": 1, "style": "synther"}
    config = {
        "model": MODEL_KIND,
        "gta_diffusion_version": __version__,
        "train": asdict(cfg), "edm": asdict(edm), "network": network, "normalizer": norm.to_dict(),
        "world_size": 1,
        "data": {"path": str(Path(data_path).resolve()), "env_id": store.env_id,
                 "num_transitions": store.num_transitions, "num_episodes": store.num_episodes,
                 "ref_scores": store.ref_scores, "action_range": _action_range(data),
                 # what evaluating in the env needs (PointMaze: Dict observations, goal and episode settings)
                 "env_kwargs": store.attrs.get("env_kwargs"),
                 "observation_layout": store.attrs.get("observation_layout")},
    }
    trainer = SynthERTrainer(run_dir, config, TransitionSet(data, norm, device), device=device)
    config["network"]["parameters"] = count_parameters(trainer.denoiser)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / CONFIG_NAME, config)
    return trainer


def _action_range(data: Transitions) -> dict[str, list[float]]:
    return {"low": data.actions.min(0).tolist(), "high": data.actions.max(0).tolist()}


def run_action_range(config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the training data's actions per dimension: recorded in the run's config, or (runs
    made before it was recorded) read from the training store, which must then still exist."""
    recorded = config["data"].get("action_range")
    if recorded is None:
        path = config["data"]["path"]
        try:
            recorded = _action_range(_open_data(path)[1])
        except (StoreError, OSError) as exc:
            raise DiffusionError(f"this SynthER run does not record its data's action range and its training "
                                 f"store {path} cannot be read ({exc}); pass --no-clip-actions") from None
    return np.asarray(recorded["low"], np.float32), np.asarray(recorded["high"], np.float32)


def load_synther(run_dir: str | Path, device: str | torch.device = "cpu", *, ema: bool = True
                 ) -> tuple[torch.nn.Module, TransitionNormalizer, EDMConfig, dict[str, Any]]:
    """The trained SynthER denoiser (EMA weights by default) in eval mode, its normaliser, EDM config and
    run config. Buffers (the random Fourier frequencies) come from the checkpoint's full state_dict: the
    EMA holds parameters only."""
    config = read_config(run_dir)
    _check_run(config, run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise DiffusionError(f"{run_dir} has no checkpoint yet")
    edm = EDMConfig(**config["edm"])
    denoiser = build_denoiser(config["network"], edm.sigma_data)
    tensors = load_checkpoint(ckpt, "cpu")
    state = dict(tensors["model"])
    if ema:
        state.update(tensors["ema"])
    try:
        denoiser.load_state_dict(state)
    except RuntimeError as exc:
        raise DiffusionError(f"{ckpt} does not fit the network of {run_dir} ({str(exc).splitlines()[0]})") from None
    denoiser.to(device).eval().requires_grad_(False)
    return denoiser, TransitionNormalizer.from_dict(config["normalizer"]), edm, config


@dataclass(frozen=True)
class SampleConfig:
    num_transitions: int = 5_000_000  # generated transitions (SynthER and GTA: 5M)
    batch_size: int = 100_000  # transitions per sampler call (SynthER: 100k); the last call is padded
    seed: int = 0  # transition j has seed seed * 2**32 + j
    num_steps: int | None = None  # sampler steps (None: the model's EDM config, 128)
    terminal_threshold: float = 0.5  # terminal = generated terminal column > threshold (SynthER)
    segment_length: int = 1000  # longest segment written (see the module docstring)
    bf16: bool = False  # bf16 autocast in the denoiser
    compile: bool = False  # torch.compile the denoiser
    clip_actions: bool = True  # clip generated actions to the training data's per-dimension range (as GTA's)

    def check(self) -> None:
        for name in ("num_transitions", "batch_size", "segment_length"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise DiffusionError(f"{name} must be a positive integer, got {value}")
        if self.num_steps is not None and (int(self.num_steps) != self.num_steps or self.num_steps < 2):
            raise DiffusionError(f"num_steps must be an integer >= 2, got {self.num_steps}")
        if int(self.seed) != self.seed or not (0 <= self.seed < 2**31):
            raise DiffusionError(f"seed must be an integer in [0, 2**31), got {self.seed}")
        if not math.isfinite(self.terminal_threshold):
            raise DiffusionError(f"terminal_threshold must be finite, got {self.terminal_threshold}")


def sample_normalized(net: torch.nn.Module, transition_dim: int, edm: EDMConfig, seeds: torch.Tensor, *,
                      bf16: bool = False) -> torch.Tensor:
    """Generated z-scored vectors [B, D] (float32, on the seeds' device) for per-transition seeds [B] int64:
    pure-noise EDM sampling, unconditional. No host synchronisation (no host-device copies at all)."""
    dev = seeds.device
    shape_only = torch.zeros(len(seeds), 1, transition_dim, device=dev)  # start_index = 0: only the shape is used
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        x = edm_sampler(net, shape_only, None, cfg=edm, start_index=0, noise=SeededNoise(seeds))  # [B, 1, D]
    return x[:, 0].float()


def sample_transitions(net: torch.nn.Module, norm: TransitionNormalizer, edm: EDMConfig, seeds: torch.Tensor,
                       *, bf16: bool = False) -> torch.Tensor:
    """Generated vectors [B, D] in original units (float32, on the seeds' device) for seeds [B]."""
    dev = seeds.device
    mean = torch.as_tensor(norm.mean, dtype=torch.float32, device=dev)
    std = torch.as_tensor(norm.std, dtype=torch.float32, device=dev)
    return sample_normalized(net, norm.transition_dim, edm, seeds, bf16=bf16) * std + mean


def _source_env_attrs(config: dict[str, Any]) -> dict[str, Any]:
    """The training store's env settings (env_kwargs, observation_layout), so that the samples evaluate in the
    same env as the original data: from the run's config, or, for runs recorded before it kept them, from the
    training store if it is still there."""
    data = config["data"]
    if "env_kwargs" in data:
        return {"env_kwargs": data["env_kwargs"], "observation_layout": data.get("observation_layout")}
    try:
        store = TrajectoryStore.open(data["path"])
    except (StoreError, FileNotFoundError, NotADirectoryError):
        warnings.warn(f"the SynthER run predates recording its env settings and its training store {data['path']} is "
                      "gone: the samples carry no env_kwargs / observation layout (an env that needs them, e.g. "
                      "PointMaze, will be evaluated with its defaults)", stacklevel=2)
        return {}
    return {"env_kwargs": store.attrs.get("env_kwargs"), "observation_layout": store.attrs.get("observation_layout")}


def generate_synther(model_dir: str | Path, out_path: str | Path, cfg: SampleConfig, *,
                     device: str | torch.device = "cpu", overwrite: bool = False,
                     progress: Callable[[int], None] | None = None) -> TrajectoryStore:
    """Sample ``cfg.num_transitions`` transitions from the SynthER model in ``model_dir`` and write them to
    ``out_path`` batch by batch (atomically: nothing appears at ``out_path`` if anything fails)."""
    cfg.check()
    out_path = check_output_store(out_path, overwrite=overwrite)  # the training store is known once loaded
    device = torch.device(device)
    denoiser, norm, edm, config = load_synther(model_dir, device)
    if out_path.resolve() == Path(config["data"]["path"]).resolve():
        raise DiffusionError(f"{out_path} is the model's training store: write the samples elsewhere")
    if cfg.num_steps is not None:
        edm = replace(edm, num_steps=cfg.num_steps)
    net = torch.compile(denoiser) if cfg.compile else denoiser
    n, bs = cfg.num_transitions, min(cfg.batch_size, cfg.num_transitions)
    base = np.int64(cfg.seed) << np.int64(32)
    mean = torch.as_tensor(norm.mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(norm.std, dtype=torch.float32, device=device)
    lo_score, hi_score = config["data"].get("ref_scores") or (None, None)
    action_range = run_action_range(config) if cfg.clip_actions else None
    provenance: dict[str, Any] = {
        "producer": f"gta-diffusion {__version__}",
        "method": "SynthER",
        "sample": asdict(cfg),
        "num_steps": edm.num_steps,
        "model_dir": str(Path(model_dir).resolve()),
        "model_train_steps": config["train"]["steps"],
        "model_parameters": config["network"].get("parameters"),
        "source_store": config["data"]["path"],
        "transition_level": True,
        "segments": f"independent transitions in sampling order, cut after terminals and every "
                    f"{cfg.segment_length} rows; boundaries carry no temporal meaning",
    }
    clipped = 0.0  # transitions with an action entry outside the range
    source = _source_env_attrs(config)
    with StoreWriter(out_path, env_id=norm.env_id, obs_dim=norm.obs_dim, act_dim=norm.act_dim,
                     ref_min_score=lo_score, ref_max_score=hi_score, provenance=provenance,
                     observation_layout=source.get("observation_layout"),
                     attrs={"env_kwargs": source["env_kwargs"]} if source.get("env_kwargs") else None,
                     overwrite=overwrite) as writer:
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            # Always a full batch (the last one padded with repeats of its final seed): one shape for compile.
            idx = torch.arange(lo, lo + bs, dtype=torch.int64).clamp_(max=n - 1)
            seeds = (idx + int(base)).to(device)
            x = sample_normalized(net, norm.transition_dim, edm, seeds, bf16=cfg.bf16) * std + mean  # [bs, D]
            x = x[: hi - lo].cpu().numpy()
            tr = vectors_to_transitions(x, norm, cfg.terminal_threshold)
            if action_range is not None:
                clipped += clip_actions(tr, *action_range) * len(tr.actions)
            ends = segment_ends(tr.terminals, cfg.segment_length)
            tr.timeouts[ends - 1] = ~tr.terminals[ends - 1]
            first = np.concatenate([[0], ends[:-1]])
            writer.add_transitions(tr, ends, seed=base + lo + first)
            if progress is not None:
                progress(hi - lo)
        if action_range is not None:  # the training data's action range and the fraction of transitions clipped
            writer.update_provenance(action_clip={"low": action_range[0].tolist(), "high": action_range[1].tolist(),
                                                  "fraction_clipped": clipped / n})
        else:
            writer.update_provenance(action_clip=None)
    return TrajectoryStore.open(out_path)
