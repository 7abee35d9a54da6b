"""The settings of gta-diffusion's training and augmentation, one frozen dataclass each, and the one place
their defaults and checks are declared: the Python API takes these classes, the ``gta-diffusion`` command line
leaves every option it is not given to them (and shows their defaults in ``--help``), and run directories and
stores record them as JSON (``asdict``; :func:`config_from_dict` reads them back).

No torch here: the command line reads the defaults without loading it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, InitVar, dataclass, field, fields
from typing import Any

from gta_diffusion.errors import DiffusionError

__all__ = ["AugmentConfig", "CONDITIONINGS", "REWEIGHTS", "SYNTHER_TRAIN", "TrainConfig", "WindowConfig",
           "config_from_dict", "default", "merge"]


@dataclass(frozen=True)
class WindowConfig:
    horizon: int = 31  # H transitions per window (paper A.1: 31 transitions = 32 rows)
    gamma: float = 0.99  # discount of the conditioning return (paper Eq. 8)
    cond_scale: float = 0.01  # condition = cond_scale * return (authors' code: x0.01)
    # Added to true terminal rewards before computing returns (A.1). None: -100, or 0 for goal-reaching tasks
    # (resolve_window, at model creation; the model's config records the number).
    terminal_penalty: float | None = None
    penalty_in_reward_channel: bool = False  # authors' variant: the model also sees the penalised reward



@dataclass(frozen=True)
class TrainConfig:
    preset: str = "fast-mixer"  # network name in gta_diffusion.networks.PRESETS (mixer-unet: GTA's A.2)
    network_overrides: dict[str, Any] = field(default_factory=dict)  # keyword overrides of the network
    steps: int = 1_000_000  # gradient steps (Table 6: 1e6)
    batch_size: int = 256  # global batch, split over ranks (Table 6: 256)
    lr: float = 3e-4  # peak learning rate (Table 6)
    warmup_steps: int = 1000  # linear warm-up (capped at 10% of steps), then cosine to min_lr_ratio * lr
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0  # Table 6 uses Adam: no decay
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max gradient norm (SynthER / GTA code)
    ema_decay: float = 0.999  # EMA of the weights, ramped as min(decay, (1+n)/(10+n))
    cond_drop_prob: float = 0.25  # classifier-free guidance dropout (Table 6: lambda = 0.25)
    bf16: bool = False  # bf16 autocast for the forward pass
    compile: bool = False  # torch.compile the network
    compile_mode: str | None = None  # torch.compile mode; "reduce-overhead" adds CUDA graphs (single process)
    cuda_graph: bool = False  # capture the WHOLE step (sampling, loss, backward, clip, AdamW, EMA) in one CUDA graph
    seed: int = 0
    log_every: int = 1000  # steps between metric lines (the only host syncs of the loop)
    checkpoint_every: int = 20_000
    keep_checkpoints: int = 2
    log_to: tuple[str, ...] = ()  # copies of metrics.jsonl: csv, tensorboard, wandb (gta_data.metric_sinks)

    def check(self) -> None:
        """One-line errors for settings no training can use (GTA's and SynthER's runs)."""
        from gta_data.metric_sinks import SinkError, parse_sinks
        from gta_diffusion.networks import LEGACY_NAMES, network_spec  # torch: only when a run is checked

        if self.steps < 1 or self.batch_size < 1:
            raise DiffusionError(f"steps and batch size must be positive, got {self.steps} and {self.batch_size}")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise DiffusionError("log and checkpoint intervals must be positive")
        if not (math.isfinite(self.lr) and self.lr > 0) or self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise DiffusionError(f"need lr > 0, warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got {self.lr}, "
                                 f"{self.warmup_steps}, {self.min_lr_ratio}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise DiffusionError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise DiffusionError(f"cond_drop_prob must be in [0, 1], got {self.cond_drop_prob}")
        try:
            parse_sinks(self.log_to, "gta-diffusion")
        except SinkError as exc:
            raise DiffusionError(str(exc)) from None
        if self.preset in LEGACY_NAMES:  # old runs still load with these names; new ones use the current names
            raise DiffusionError(f"network {self.preset!r} is now called {LEGACY_NAMES[self.preset]!r}")
        try:
            network_spec(self.preset)
        except ValueError as exc:
            raise DiffusionError(str(exc)) from None


CONDITIONINGS = ("amplified", "fixed", "none", "inpaint")
REWEIGHTS = ("none", "bins", "episodes")


@dataclass(frozen=True)
class AugmentConfig:
    mu: float = 0.5  # partial noising ratio, 0 < mu <= 1 (Sec. 4.2; Table 8)
    alpha: float = 1.3  # return multiplier (Eq. 8; Table 8)
    guidance_weight: float = 2.0  # w of GTA Eq. 4 (Table 7: 2.0); the sampler's scale is s = w + 1
    conditioning: str = "amplified"  # amplified | fixed | none | inpaint (ablations, appendix E.6)
    fixed_return: float | None = None  # target return (unscaled) for conditioning = fixed
    num_transitions: int = 5_000_000  # generated transitions (Sec. 5: 5M); last window truncated to fit
    batch_size: int = 8192  # windows per sampler call (large GPU batches)
    reweight: str = "none"  # none | bins (Eq. 13) | episodes (sparse tasks, A.3)
    num_bins: int = 50  # N_B (Table 9)
    u: float = 0.001  # Eq. 13 smoothing (Table 9)
    q: float = 5.0  # Eq. 13 temperature, in units of the scaled condition (Table 9)
    # Upper bound on the per-window weight (v_j / sum v) / |B_j| before normalisation (reweight.window_weights);
    # the authors' code clips at 5.0; None: no clip.
    reweight_clip: float | None = None
    success_weight: float = 10.0  # c: weight of successful episodes for reweight = episodes (Table 8)
    seed: int = 0  # run seed: source choice and the per-window seeds
    num_steps: int | None = None  # sampler steps K (None: the model's EDM config, 128)
    bf16: bool = False  # bf16 autocast in the denoiser
    compile: bool = False  # torch.compile the denoiser
    compile_mode: str | None = None  # torch.compile mode, e.g. "reduce-overhead" (CUDA graphs)
    clip_actions: bool = True  # clip generated actions to the per-dimension range of the source data's actions
    # Refused: the old name of the knob, which took the sampler's scale s = w + 1 (see __post_init__).
    guidance_scale: InitVar[float | None] = None

    def __post_init__(self, guidance_scale: float | None) -> None:
        if guidance_scale is not None:
            raise DiffusionError(f"AugmentConfig takes guidance_weight, the paper's w (Eq. 4), not guidance_scale: "
                                 f"guidance_scale={guidance_scale} is guidance_weight={guidance_scale - 1}")

    @property
    def sampler_scale(self) -> float:
        """s of ``edm.guided_denoise`` (D_u + s (D_c - D_u)) for the paper's w of Eq. 4,
        eps_c + w (eps_c - eps_u) = eps_u + (w + 1)(eps_c - eps_u): the one place w becomes s."""
        return self.guidance_weight + 1.0

    def check(self) -> None:
        if not 0.0 < self.mu <= 1.0:
            raise DiffusionError(f"mu must be in (0, 1], got {self.mu}")
        if self.conditioning not in CONDITIONINGS:
            raise DiffusionError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {self.conditioning!r}")
        if self.reweight not in REWEIGHTS:
            raise DiffusionError(f"reweight must be one of {', '.join(REWEIGHTS)}, got {self.reweight!r}")
        if self.reweight_clip is not None and not (math.isfinite(self.reweight_clip) and self.reweight_clip > 0):
            raise DiffusionError(f"the reweighting clip must be a positive number, got {self.reweight_clip}")
        if self.reweight_clip is not None and self.reweight != "bins":
            raise DiffusionError(f"the reweighting clip applies to reweight 'bins' only, not {self.reweight!r}")
        if self.conditioning == "fixed" and self.fixed_return is None:
            raise DiffusionError("conditioning 'fixed' needs a target return (fixed_return)")
        if self.num_transitions < 1 or self.batch_size < 1:
            raise DiffusionError("num_transitions and batch_size must be positive")
        if not 0 <= self.seed < 2**31:
            raise DiffusionError(f"seed must be in [0, 2^31), got {self.seed}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise DiffusionError(f"alpha must be a positive number, got {self.alpha}")
        if not (math.isfinite(self.guidance_weight) and self.guidance_weight >= -1):
            raise DiffusionError(f"the guidance weight w must be a number >= -1 (w = -1: unconditional, 0: "
                                 f"conditional), got {self.guidance_weight}")
        if self.fixed_return is not None and not math.isfinite(self.fixed_return):
            raise DiffusionError(f"the fixed return must be a finite number, got {self.fixed_return}")
        if self.num_steps is not None and (int(self.num_steps) != self.num_steps or self.num_steps < 2):
            raise DiffusionError(f"num_steps must be an integer >= 2, got {self.num_steps}")


SMALL_DATASET = 800_000  # SynthER: batch 256 below this many transitions, 1024 otherwise
EMA_PER_STEP = 0.995 ** (1 / 10)  # SynthER's 0.995 every 10 steps, as a per-step decay
# SynthER's training settings (conglu1997/SynthER) where they differ from GTA's TrainConfig defaults; the batch
# size depends on the store (SMALL_DATASET).
SYNTHER_TRAIN: dict[str, Any] = dict(preset="synther", steps=100_000, warmup_steps=0, betas=(0.9, 0.99),
                                     ema_decay=EMA_PER_STEP, cond_drop_prob=0.0, checkpoint_every=10_000)


def default(cls: type, name: str) -> Any:
    """The default of field ``name`` of a config dataclass."""
    f = {f.name: f for f in fields(cls)}[name]
    return f.default_factory() if f.default is MISSING else f.default


def merge(cls: type, *layers: Mapping[str, Any] | None) -> Any:
    """``cls`` built from the layers in order, later ones winning, each entry that is None left out (an option
    not given); what no layer sets keeps the dataclass default. The command lines merge preset, then options."""
    values: dict[str, Any] = {}
    for layer in layers:
        values.update({k: v for k, v in (layer or {}).items() if v is not None})
    return cls(**values)


def config_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a frozen config dataclass from JSON (unknown keys refused; lists back to tuples)."""
    names = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise DiffusionError(f"unknown {cls.__name__} keys {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
