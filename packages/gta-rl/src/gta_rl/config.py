"""The settings of a training run, declared once: :class:`RunConfig` (what a caller or the CLI asks for, with
every default and every check) and :class:`ResolvedRun` (what the run computes with: the config with its
per-algorithm defaults, preset and evaluation resolved, plus the data's env and dimensions). A
:class:`ResolvedRun` is the run directory's ``config.json`` (RUN_FORMAT.md): :meth:`ResolvedRun.to_json`
writes it, :meth:`ResolvedRun.from_json` reads it back, including files written by earlier versions that lack
the later keys."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from gta_data.metric_sinks import SinkError, parse_sinks
from gta_rl.seeds import parse_seeds


class RunError(ValueError):
    """A run that cannot start or resume (one-line message)."""


# Per-algorithm defaults of the settings left None in RunConfig (CORL's and the GTA appendix's values).
ALGORITHM_DEFAULTS = {"steps": 1_000_000, "batch_size": 1024}
DT_DEFAULTS = {"steps": 100_000, "batch_size": 4096}


@dataclass(frozen=True)
class RunConfig:
    """One training run (or a stack of arms: ``gta_rl.train_arms``). ``data`` and ``seeds`` may be given as
    lists, ``seeds`` also as text ('0-7', '0,3,5'), ``log_to`` as 'csv,tensorboard'; they are stored as
    tuples. Invalid values raise :class:`RunError` (or SeedSpecError) at construction."""

    algorithm: str  # td3bc | iql | cql | mcq | dt
    data: tuple[str, ...]  # store paths; the first is the original dataset
    seeds: tuple[int, ...] = (0,)  # trained together, stacked
    steps: int | None = None  # gradient steps per seed; None: 1M (CORL, GTA), dt: 100k
    batch_size: int | None = None  # None: 1024 (GTA appendix, every Q-learning method), dt: 4096
    eval_every: int = 5000  # CORL eval_freq; 0: evaluate only at the end
    eval_episodes: int | None = None  # None: 100 for mazes and dt, 10 otherwise (CORL; paper C.3); 0: none
    log_every: int = 1000  # train metrics are reduced on the device and written every N steps
    checkpoint_every: int = 0  # 0: at every evaluation
    mix_ratio: float | None = None  # fraction of each batch from the first store; None = uniform union
    device: str = "auto"
    compile: bool = False  # torch.compile the training step
    cuda_graph: bool = False  # capture the training step in CUDA graphs
    tf32: bool = False  # TF32 tensor-core matmuls on CUDA (10-bit mantissa inputs, fp32 accumulation)
    fullgraph: bool = False  # compile the whole step as one graph, gradients included (implies compile)
    bf16: bool = False  # bf16 mixed precision: hidden-layer matmuls in bf16 (fp32 outputs, losses, Adam)
    fused_mlp: bool = False  # every pass of the 256-256 networks through Triton kernels (CUDA, with bf16)
    preset: str | None = "auto"  # per-family settings ('auto' matches the store's dataset name; None or 'none')
    overrides: dict[str, Any] = field(default_factory=dict)  # algorithm settings over the preset's
    eval_seed: int = 0  # env seed of evaluation episode 0
    eval_async: bool = False  # evaluation envs sharded over worker processes
    eval_overlap: bool = True  # evaluate a copy of the agent in a background thread while training goes on
    log_to: tuple[str, ...] = ()  # copies of the metric logs: csv, tensorboard, wandb (gta_data.metric_sinks)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the accepted spellings once, here
        set_(self, "data", (self.data,) if isinstance(self.data, str) else tuple(str(p) for p in self.data))
        set_(self, "seeds", tuple(parse_seeds(self.seeds) if isinstance(self.seeds, str) else
                                  (int(s) for s in self.seeds)))
        set_(self, "overrides", dict(self.overrides or {}))
        if self.preset == "none":
            set_(self, "preset", None)
        try:
            set_(self, "log_to", parse_sinks(self.log_to, "gta-rl"))
        except SinkError as exc:
            raise RunError(str(exc)) from None
        if not self.seeds:
            raise RunError("no seeds")
        if any(s < 0 or s >= 2**31 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise RunError(f"seeds must be distinct and lie in [0, 2**31), got {list(self.seeds)}")
        if (self.steps is not None and self.steps < 1) or (self.batch_size is not None and self.batch_size < 1):
            raise RunError("steps and batch size must be positive")
        if self.eval_every < 0 or (self.eval_episodes is not None and self.eval_episodes < 0) or self.log_every < 1:
            raise RunError("eval_every and eval_episodes must be >= 0 and log_every >= 1")
        if self.checkpoint_every < 0:
            raise RunError(f"checkpoint_every must be >= 0 (0: at every evaluation), got {self.checkpoint_every}")

    def with_algorithm_defaults(self, algorithm: str) -> RunConfig:
        """The config with ``algorithm`` (canonical name) and its defaults for the settings left None."""
        defaults = DT_DEFAULTS if algorithm == "dt" else ALGORITHM_DEFAULTS
        return replace(self, algorithm=algorithm, **{k: v for k, v in defaults.items() if getattr(self, k) is None})


def default_of(name: str) -> Any:
    """The default of a :class:`RunConfig` setting (the CLI shows and passes these, never its own)."""
    f = next(f for f in fields(RunConfig) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default


@dataclass(frozen=True)
class ResolvedRun:
    """A run as trained and recorded in ``config.json``: ``config`` resolved (canonical algorithm, steps and
    batch size, matched preset, evaluation episodes), the algorithm's full settings, and what the stores say
    (env, its kwargs and reference scores, dimensions, observation layout)."""

    config: RunConfig
    algorithm_config: dict[str, Any]  # every setting of the algorithm's config dataclass (JSON values)
    env_id: str
    obs_dim: int
    act_dim: int
    max_action: float
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    ref_scores: tuple[float, float] | None = None
    observation_layout: list[dict[str, Any]] | None = None
    num_transitions: tuple[int, ...] = ()  # per store
    reward_factor: float = 1.0  # the reward transform's factor (raw reward x factor + bias)
    eval_seeding: str | None = None  # None: a run written before per-seed evaluation episodes (run_eval.py)
    arm: str | None = None  # in a stack of arms: this run's arm, and every arm's name
    arms: tuple[str, ...] | None = None

    @property
    def algorithm(self) -> str:
        return self.config.algorithm

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.config.seeds

    def with_seeds(self, seeds: Sequence[int]) -> ResolvedRun:
        """The same run for other seeds (one seed of a stack, or a stack of several arms' seeds, which repeat).
        The recorded config is not checked again: reading a run needs none of its log sinks."""
        config = copy.copy(self.config)
        object.__setattr__(config, "seeds", tuple(int(s) for s in seeds))
        return replace(self, config=config)

    def describe(self) -> str:
        """The resolved settings in two lines (what `gta-rl train` prints as a run starts)."""
        c = self.config
        evaluation = (f"{c.eval_episodes} episodes per seed every {c.eval_every or c.steps} steps"
                      if c.eval_episodes else "none")
        settings = ", ".join(f"{k}={v}" for k, v in self.algorithm_config.items())
        return (f"{c.algorithm} on {self.env_id}, preset {c.preset or 'none'}: {c.steps} steps of batch "
                f"{c.batch_size}, evaluation {evaluation}\nsettings: {settings}")

    def to_json(self) -> dict[str, Any]:
        """``config.json``: one flat object, the config's settings beside the resolved ones."""
        cfg = asdict(self.config)
        out = {"algorithm": cfg.pop("algorithm"), "algorithm_config": self.algorithm_config,
               "preset": cfg.pop("preset"), **cfg}
        out |= {k: getattr(self, k) for k in ("env_id", "env_kwargs", "obs_dim", "act_dim", "max_action",
                                              "ref_scores", "observation_layout", "num_transitions",
                                              "reward_factor", "eval_seeding")}
        if self.arms is not None:
            out |= {"arm": self.arm, "arms": self.arms}
        return _plain(out)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ResolvedRun:
        """A ``config.json`` read back; keys written by later versions than the file's take their defaults
        (a run written before ``--bf16`` trained in fp32, one before ``eval_seeding`` used the old episodes)."""
        names = {f.name for f in fields(RunConfig)} - {"log_to"}
        try:
            config = RunConfig(**{k: v for k, v in doc.items() if k in names})
            # The sinks the run copied its logs to are recorded, not checked again: reading a run needs none of them.
            object.__setattr__(config, "log_to", tuple(doc.get("log_to") or ()))
            own = {f.name for f in fields(cls)} - {"config"}
            run = cls(config=config, **{k: v for k, v in doc.items() if k in own})
        except TypeError as exc:  # a required key missing
            raise RunError(f"config.json is not a gta-rl run's: {exc}") from None
        tuples = {k: tuple(getattr(run, k)) for k in ("ref_scores", "num_transitions", "arms")
                  if getattr(run, k) is not None}
        return replace(run, env_kwargs=dict(run.env_kwargs or {}), **tuples)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what ``json.loads`` gives back, so a written and a fresh config compare."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
