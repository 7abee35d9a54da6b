"""GTA augmentation: partial noising and denoising with amplified return guidance (GTA Sec. 4.2, Eq. 8-10),
reweighted choice of source windows (Sec. 4.4, A.3), written as an augmented trajectory store.

For each generated window: pick a source window (uniform, Eq. 13 bins, or sparse-task episodes), z-score
it, add noise of level sigma_k with k = int(K (1 - mu)) (partial noising, Eq. 9; mu = 1 starts from pure
noise) and run the remaining stochastic Heun steps of ``edm.edm_sampler`` with classifier-free guidance
toward the amplified condition (Eq. 10). Amplified return (Eq. 8): y_hat = alpha * y for y > 0; for y <= 0
we follow the authors and use (2 - alpha) * y, which also moves the target up (toward zero) rather than
making a negative return more negative.

Ablation switches (``conditioning``): ``amplified`` (GTA), ``fixed`` (every window conditioned on one target
return), ``none`` (unconditional sampling), ``inpaint`` (appendix E.6: no return condition; after every
step the reward entries are replaced by the source rewards amplified by the same rule, noised to the
current level).

Every generated window has its own seed (``seed * 2**32 + window index``) and all sampler noise derives
from it (``noise.SeededNoise``), so a window does not depend on the batch size or on how the work is
sharded over ranks. Windows become H transitions each (``data.windows_to_transitions``: terminals from the
source window, no terminal penalty), one segment per window in the output store, with ``source_start``
and ``seed`` as per-segment metadata and the run settings in the store provenance. Under torchrun each
rank generates a contiguous share of the windows; rank 0 merges the shares into one store, atomically.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gta_data import StoreWriter, TrajectoryStore, Transitions, check_replaceable
from gta_diffusion._version import __version__
from gta_diffusion.config import AugmentConfig
from gta_diffusion.data import Normalizer, WindowConfig, WindowSet, windows_to_transitions
from gta_diffusion.distributed import DistInfo, barrier, broadcast_object, shard_range
from gta_diffusion.edm import Denoiser, EDMConfig, edm_sampler, start_index
from gta_diffusion.errors import DiffusionError
from gta_diffusion.noise import SeededNoise
from gta_diffusion.reweight import binned_probabilities, episode_probabilities


def amplify(y: torch.Tensor | np.ndarray, alpha: float):
    """Eq. 8 target: alpha * y for y > 0, (2 - alpha) * y otherwise (authors' rule for negative returns)."""
    if isinstance(y, torch.Tensor):
        return torch.where(y > 0, alpha * y, (2.0 - alpha) * y)
    return np.where(y > 0, alpha * y, (2.0 - alpha) * y)


def window_seeds(seed: int, count: int, first: int = 0) -> np.ndarray:
    """Seed of each generated window: seed * 2**32 + window index (int64, unique per run and window)."""
    return (np.int64(seed) << np.int64(32)) + np.arange(first, first + count, dtype=np.int64)


def source_probabilities(windows: WindowSet, rewards: np.ndarray, cfg: AugmentConfig) -> np.ndarray | None:
    """Probability of each window as a source [W], or None for uniform."""
    if cfg.reweight == "none":
        return None
    if cfg.reweight == "bins":
        return binned_probabilities(windows.cond_np[windows.starts_np], cfg.num_bins, cfg.u, cfg.q,
                                    cfg.reweight_clip)
    episode = np.searchsorted(windows.episode_ends, windows.starts_np, side="right")  # [W]
    starts = np.concatenate([[0], windows.episode_ends[:-1]])
    success = np.maximum.reduceat(np.asarray(rewards, dtype=np.float64), starts) > 0
    return episode_probabilities(episode, success, cfg.success_weight)


def choose_sources(windows: WindowSet, rewards: np.ndarray, cfg: AugmentConfig, count: int) -> np.ndarray:
    """Start rows of the ``count`` source windows (deterministic in ``cfg.seed``)."""
    rng = np.random.default_rng(cfg.seed)
    p = source_probabilities(windows, rewards, cfg)
    return windows.starts_np[rng.choice(len(windows), size=count, replace=True, p=p)]


class _GraphStep(torch.nn.Module):
    """Marks every denoiser call as a new CUDA-graph step: the sampler consumes each output before the next
    call, so replays may reuse the output memory without the aliasing checks of graph trees."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *args: Any) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()
        return self.net(*args)


class Augmenter:
    """The sampling side of a trained model: z-scored source windows in, generated windows out."""

    def __init__(self, denoiser: Denoiser, norm: Normalizer, wcfg: WindowConfig, edm: EDMConfig,
                 cfg: AugmentConfig, device: torch.device | str = "cpu") -> None:
        cfg.check()
        self.norm, self.wcfg, self.cfg, self.device = norm, wcfg, cfg, torch.device(device)
        self.edm = EDMConfig(**{**asdict(edm), "num_steps": edm.num_steps if cfg.num_steps is None else cfg.num_steps})
        self.denoiser = denoiser.to(self.device).eval().requires_grad_(False)
        self.net = self.denoiser
        if cfg.compile:
            self.net = torch.compile(self.denoiser, mode=cfg.compile_mode)
            if cfg.compile_mode in ("reduce-overhead", "max-autotune"):
                self.net = _GraphStep(self.net)
        self.start_index = 0 if cfg.mu >= 1.0 else start_index(cfg.mu, self.edm.num_steps)
        r = norm.obs_dim + norm.act_dim  # column of the reward
        self.reward_col = r
        self.known_mask = torch.zeros(wcfg.horizon + 1, norm.transition_dim, device=self.device)
        self.known_mask[: wcfg.horizon, r] = 1.0
        self.r_mean, self.r_std = float(norm.mean[r]), float(norm.std[r])

    def conditions(self, cond_src: torch.Tensor) -> torch.Tensor | None:
        """Condition values [B] (scaled) for source conditions [B], or None (unconditional)."""
        cfg = self.cfg
        if cfg.conditioning == "amplified":
            return amplify(cond_src, cfg.alpha)
        if cfg.conditioning == "fixed":
            return torch.full_like(cond_src, cfg.fixed_return * self.wcfg.cond_scale)
        return None

    @torch.no_grad()
    def sample(self, x_src: torch.Tensor, cond_src: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Generated z-scored windows [B, H+1, D] from z-scored sources x_src [B, H+1, D], their conditions
        [B] and per-window seeds [B] int64. Runs on the device without host syncs."""
        cond = self.conditions(cond_src)
        known = mask = None
        if self.cfg.conditioning == "inpaint":
            r = self.reward_col
            raw = x_src[..., r] * self.r_std + self.r_mean  # [B, H+1]
            known = x_src.clone()
            known[..., r] = (amplify(raw, self.cfg.alpha) - self.r_mean) / self.r_std
            mask = self.known_mask.expand_as(x_src)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            out = edm_sampler(
                self.net, x_src, cond, cfg=self.edm, start_index=self.start_index,
                guidance_scale=self.cfg.sampler_scale, noise=SeededNoise(seeds), known=known, known_mask=mask,
            )
        return out.float()

    def generate(self, windows: WindowSet, starts: np.ndarray, seeds: np.ndarray,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Generated windows [n, H+1, D] in original units for source starts [n] and seeds [n].
        Every sampler call gets exactly ``batch_size`` windows (the last batch is padded), so compiled
        and graph-captured code sees one shape; results are copied to the host in large chunks."""
        n, bs = len(starts), self.cfg.batch_size
        starts_dev = torch.from_numpy(np.asarray(starts, np.int64)).to(self.device)
        seeds_dev = torch.from_numpy(np.asarray(seeds, np.int64)).to(self.device)
        out = np.empty((n, self.wcfg.horizon + 1, self.norm.transition_dim), dtype=np.float32)
        pending: list[tuple[int, torch.Tensor]] = []
        pending_rows, flush_rows = 0, max(bs, 1 << 17)
        mean = torch.as_tensor(self.norm.mean, dtype=torch.float32, device=self.device)
        std = torch.as_tensor(self.norm.std, dtype=torch.float32, device=self.device)

        def flush() -> None:
            for lo, x in pending:
                out[lo : lo + len(x)] = x.cpu().numpy()
            pending.clear()

        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            idx = torch.arange(lo, lo + bs, device=self.device).clamp_(max=n - 1)  # pad with the last window
            src = starts_dev[idx]
            x = self.sample(windows.gather(src), windows.cond[src], seeds_dev[idx])
            pending.append((lo, (x[: hi - lo] * std + mean)))
            pending_rows += hi - lo
            if pending_rows >= flush_rows:
                flush()
                pending_rows = 0
            if progress is not None:
                progress(hi - lo)
        flush()
        return out


def segment_conditions(windows: WindowSet, starts: np.ndarray, cfg: AugmentConfig) -> dict[str, np.ndarray]:
    """Per-segment metadata for data-quality analysis (GTA F.6): the source window's return (discounted, with
    the terminal penalty, unscaled) and, when the sampler was conditioned, the target return it was given."""
    source_return = windows.returns_np[starts]
    out = {"source_return": source_return}
    if cfg.conditioning == "amplified":
        out["condition"] = amplify(source_return, cfg.alpha)
    elif cfg.conditioning == "fixed":
        out["condition"] = np.full(len(starts), float(cfg.fixed_return))
    return out


def clip_actions(tr: Transitions, low: np.ndarray, high: np.ndarray) -> float:
    """Clip ``tr.actions`` in place to [low, high] per dimension; returns the fraction of transitions that
    had an action entry outside. The sampler knows nothing of action bounds: on the locally made
    halfcheetah-medium (a SAC policy that often saturates its tanh), over a third of GTA-generated transitions
    had an action outside [-1, 1] (docs/benchmarks-log.md), which the environment would clip and which a
    tanh policy cannot produce. The source data's own range lies inside the environment's bounds."""
    outside = (tr.actions < low) | (tr.actions > high)
    tr.actions = np.clip(tr.actions, low, high).astype(np.float32)
    return float(outside.any(1).mean()) if len(tr.actions) else 0.0


def _segments(gen: np.ndarray, norm: Normalizer, wcfg: WindowConfig, terminals: np.ndarray,
              num_transitions: int) -> tuple[Transitions, np.ndarray]:
    """Generated windows -> transitions and segment ends, the last segment truncated to the exact count."""
    h = wcfg.horizon
    tr = windows_to_transitions(gen, norm, wcfg, terminals)
    ends = np.arange(1, len(gen) + 1, dtype=np.int64) * h
    if ends[-1] > num_transitions:
        tr = tr.slice(0, num_transitions)
        ends[-1] = num_transitions
        tr.timeouts[-1] = not tr.terminals[-1]  # the truncated segment still ends here
    return tr, ends


def check_output_store(out_path: str | Path, *, overwrite: bool, source: str | Path | None = None) -> Path:
    """The output store of an augmentation (GTA, S4RL, SynthER), checked before any work: not its source,
    not existing unless ``overwrite`` (and then a store that may be replaced), in an existing folder."""
    out_path = Path(out_path)
    if source is not None and out_path.resolve() == Path(source).resolve():
        raise DiffusionError(f"{out_path} is the source store: write the augmented store elsewhere")
    if out_path.exists() and not overwrite:
        raise DiffusionError(f"{out_path} already exists (pass overwrite to replace it)")
    check_replaceable(out_path)
    if not out_path.parent.is_dir():
        raise DiffusionError(f"parent directory {out_path.parent} does not exist")
    return out_path


def augment(model_dir: str | Path, data_path: str | Path, out_path: str | Path, cfg: AugmentConfig | None = None,
            *, device: str | torch.device | None = None, dist: DistInfo = DistInfo(), overwrite: bool = False,
            progress: Callable[[int], None] | None = None, on_start: Callable[[int], None] | None = None,
            ) -> TrajectoryStore | None:
    """Generate ``cfg.num_transitions`` transitions from the model in ``model_dir`` using the source store
    ``data_path``; write them to ``out_path``. Returns the store on rank 0 (None on other ranks).
    ``cfg`` None: the defaults (GTA's mu 0.5, alpha 1.3, w 2); ``device`` None: CUDA when available.

        store = gta_diffusion.augment("runs/hopper", "hopper.zarr", "hopper-gta.zarr", AugmentConfig(mu=0.25))
    """
    from gta_data.accel.devices import resolve_device
    from gta_diffusion.training import load_model

    cfg = cfg or AugmentConfig()
    cfg.check()
    device = resolve_device(device, DiffusionError)
    out_path = check_output_store(out_path, overwrite=overwrite, source=data_path)
    denoiser, norm, wcfg, edm, config = load_model(model_dir, device)
    store = TrajectoryStore.open(data_path)
    if store.env_id != norm.env_id:
        raise DiffusionError(f"{data_path} holds {store.env_id} data but the model was trained on {norm.env_id}")
    if store.obs_dim != norm.obs_dim or store.act_dim != norm.act_dim:
        raise DiffusionError(
            f"{data_path} has obs_dim {store.obs_dim}, act_dim {store.act_dim}; the model expects "
            f"{norm.obs_dim}, {norm.act_dim}"
        )
    data = store.load()
    windows = WindowSet(data, store.episode_ends, norm, wcfg, device)
    augmenter = Augmenter(denoiser, norm, wcfg, edm, cfg, device)
    h = wcfg.horizon
    count = -(-cfg.num_transitions // h)
    starts = choose_sources(windows, data.rewards, cfg, count)  # identical on every rank (same seed)
    seeds = window_seeds(cfg.seed, count)
    lo, hi = shard_range(count, dist)
    if on_start is not None:
        on_start(hi - lo)
    gen = augmenter.generate(windows, starts[lo:hi], seeds[lo:hi], progress)
    terminals = data.terminals[starts[:, None] + np.arange(h)]  # [n, H], from the sources

    if dist.enabled:
        token = broadcast_object(dist, uuid.uuid4().hex[:8])
        shard_dir = out_path.parent / f".{out_path.name}.shards-{token}"
        if dist.is_main:
            shard_dir.mkdir()
        barrier(dist)
        np.save(shard_dir / f"rank-{dist.rank:05d}.npy", gen)
        barrier(dist)
        if not dist.is_main:
            barrier(dist)
            return None
        try:
            gen = np.concatenate([np.load(shard_dir / f"rank-{r:05d}.npy") for r in range(dist.world_size)])
        finally:
            shutil.rmtree(shard_dir, ignore_errors=True)

    tr, ends = _segments(gen, norm, wcfg, terminals, cfg.num_transitions)
    action_clip = None
    if cfg.clip_actions:
        low, high = data.actions.min(0), data.actions.max(0)
        fraction = clip_actions(tr, low, high)
        action_clip = {"low": low.tolist(), "high": high.tolist(), "fraction_clipped": fraction}
    lo_score, hi_score = store.ref_scores or (None, None)
    provenance: dict[str, Any] = {
        "producer": f"gta-diffusion {__version__}",
        "method": "GTA",
        "augment": asdict(cfg),
        "start_index": augmenter.start_index,
        "num_steps": augmenter.edm.num_steps,
        "model_dir": str(Path(model_dir).resolve()),
        "source_store": str(Path(data_path).resolve()),
        "source_env_id": store.env_id,
        "horizon": h,
        # The model's terminal penalty (A.1) and whether it was in the learned reward channel (then removed
        # from the generated rewards before writing): no store ever holds the penalty.
        "terminal_penalty": wcfg.terminal_penalty,
        "penalty_in_rewards": wcfg.penalty_in_reward_channel,
        "num_windows": count,
        "world_size": dist.world_size,
        "model_train_steps": config["train"]["steps"],
        "model_step": config.get("checkpoint_step"),  # < model_train_steps: a model whose training was stopped
        "action_clip": action_clip,  # the source data's action range and the fraction of transitions clipped
    }
    with StoreWriter(out_path, env_id=store.env_id, obs_dim=norm.obs_dim, act_dim=norm.act_dim,
                     ref_min_score=lo_score, ref_max_score=hi_score, provenance=provenance,
                     overwrite=overwrite) as writer:
        writer.add_transitions(tr, ends, source_start=starts, seed=seeds, **segment_conditions(windows, starts, cfg))
    barrier(dist)
    return TrajectoryStore.open(out_path)
