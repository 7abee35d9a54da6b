"""The settings of an online SAC run (Haarnoja et al. 2018, appendix D; CleanRL's warm-up), declared and checked
once, and the names of its run directory."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

STATE = "state.safetensors"  # the full state: networks, optimizers, buffer, episode starts (exports read it)
RESUME = "resume.safetensors"  # the small resumable state: networks, optimizers, counters (no buffer)
ACTIONS = "actions.safetensors"  # every action sent (row order), its env copy, reward sums (to check)
CONFIG = "config.json"  # the SACConfig
METRICS = "metrics.jsonl"  # a training record every log_every steps
CHECKPOINTS = "checkpoints.jsonl"  # every evaluated actor checkpoint: step, return, path
ACTORS = "actors"  # actors/step_<k>.safetensors

# Stream ids of the counter-based random draws (gta_rl.rng): one per call site.
S_BATCH, S_TARGET, S_ACTOR, S_EXPLORE, S_WARMUP = 1, 2, 3, 4, 5


class SACError(ValueError):
    """A SAC run that cannot start, resume or export (one-line message)."""


@dataclass(frozen=True)
class SACConfig:
    """One SAC run; invalid values raise :class:`SACError` at construction."""

    env_id: str
    total_steps: int = 1_000_000  # environment transitions (D4RL's SAC: 1M for every locomotion env)
    num_envs: int = 1  # copies of the env stepped together (gymnasium vector env)
    seed: int = 0
    hidden: tuple[int, ...] = (256, 256)  # actor and critic widths (Haarnoja 2018, table 1)
    batch_size: int = 256  # Haarnoja 2018
    actor_lr: float = 3e-4  # Haarnoja 2018: 3e-4 for every network
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    learning_starts: int = 5000  # uniform random actions and no updates before this many steps (CleanRL)
    updates_per_step: float = 1.0  # gradient updates per environment transition (Haarnoja: 1)
    init_alpha: float = 1.0  # initial temperature (CleanRL/SB3 start at 1)
    target_entropy: float | None = None  # None: -|A| (Haarnoja 2018)
    log_std_min: float = -5.0  # bounds of the actor's log std (CleanRL)
    log_std_max: float = 2.0
    checkpoint_every: int = 10_000  # steps between actor checkpoints (each evaluated)
    state_every: int = 0  # steps between saves of the full resumable state (0: at every checkpoint)
    eval_episodes: int = 5  # deterministic evaluation episodes per checkpoint
    eval_seed: int = 1_000_000  # env seed of evaluation episode 0 (disjoint from training seeds)
    eval_async: bool = False  # evaluation envs in worker processes
    env_async: bool = False  # training envs in worker processes (worth it for num_envs >= 4 on CPU)
    log_every: int = 1000  # steps between metrics records
    device: str = "auto"
    compile: bool = False  # torch.compile the update (sampling + losses + Adam + Polyak)
    cuda_graph: bool = False  # capture the update in a CUDA graph and replay it (CUDA only)
    # How the loop moves data (gta_rl.behaviour.training): the readable loop writes every transition to the
    # device as it comes and reads every action back synchronously (the reference the others are tested
    # against); the staged loop (default, the same numbers) stages transitions in pinned host memory and
    # copies them in one transfer every ``transfer_every`` transitions (> 1: updates sample only the rows
    # copied so far); ``overlap`` steps the envs while the GPU runs the updates owed by the previous env step,
    # acting with the actor as it was before them (one env step stale).
    readable_loop: bool = False
    transfer_every: int = 1
    overlap: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if not self.hidden or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.hidden):
            raise SACError(f"hidden must list positive widths, got {self.hidden}")
        if self.total_steps < 1 or self.num_envs < 1 or self.batch_size < 1:
            raise SACError("total_steps, num_envs and batch_size must be positive")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.eval_episodes < 1 or self.state_every < 0:
            raise SACError("checkpoint_every, log_every and eval_episodes must be positive (state_every >= 0)")
        if self.transfer_every < 1:
            raise SACError(f"transfer_every must be positive, got {self.transfer_every}")
        if self.readable_loop and (self.transfer_every != 1 or self.overlap):
            raise SACError("the readable loop takes neither transfer_every > 1 nor overlap")
        if self.updates_per_step <= 0 or self.learning_starts < 0:
            raise SACError("updates_per_step must be positive and learning_starts >= 0")
        if not 0 <= self.seed < 2**31:
            raise SACError(f"seed must be in [0, 2^31), got {self.seed}")
        rates = {"actor_lr": self.actor_lr, "critic_lr": self.critic_lr, "alpha_lr": self.alpha_lr,
                 "init_alpha": self.init_alpha}
        bad = [k for k, v in rates.items() if not (math.isfinite(v) and v > 0)]
        if bad:
            raise SACError(f"{', '.join(bad)} must be positive numbers")
        if not (0 < self.gamma <= 1 and 0 < self.tau <= 1):
            raise SACError(f"gamma and tau must lie in (0, 1], got {self.gamma} and {self.tau}")

    def check(self) -> None:
        """What needs the machine: ``cuda_graph`` on a CUDA device (the values were checked at construction)."""
        from gta_data.accel.devices import resolve_device

        if self.cuda_graph and resolve_device(self.device, SACError).type != "cuda":
            raise SACError("cuda_graph needs a CUDA device")


def is_sac_config(saved: object) -> bool:
    """Whether a loaded config.json is a SAC run's (its keys are SACConfig fields, env_id among them)."""
    names = {f.name for f in fields(SACConfig)}
    return isinstance(saved, dict) and "env_id" in saved and "total_steps" in saved and set(saved) <= names


def default_of(name: str):
    """The default of a :class:`SACConfig` setting (the CLI shows and passes these, never its own)."""
    return next(f.default for f in fields(SACConfig) if f.name == name)
