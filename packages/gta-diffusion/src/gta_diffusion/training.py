"""Training of the GTA trajectory denoiser (GTA Sec. 4.1, Eq. 7; appendix B.1, Table 6).

EDM objective (GTA Eq. 5, loss from ``edm.edm_loss``) on z-scored H+1-row windows with the scaled
discounted return as the condition, condition dropout 0.25 for classifier-free guidance. AdamW
(lr 3e-4, no weight decay: Table 6 uses Adam, AdamW only for its fused kernel), linear warm-up then
cosine annealing (Table 6: "cosine annealing warmup"), gradient clipping at norm 1, EMA of the weights
(decay 0.999 with the usual (1+n)/(10+n) ramp so that short runs have a usable EMA).

The hot loop never syncs with the host: batches are gathered on the device from device-resident windows
(:class:`gta_diffusion.data.WindowSet`) with a device generator; the loss and gradient norm are summed on
the device and read once per ``log_every`` steps. bf16 autocast and torch.compile are flags, and
``cuda_graph`` captures the whole step -- batch drawing, loss, backward, clipping, the fused AdamW update and
the EMA -- in one CUDA graph after three eager warm-up steps: at the paper's batch of 256 the step is
launch-bound, and graphs that cover only the network (compile's reduce-overhead) leave the optimizer, EMA and
loss arithmetic as hundreds of separate kernel launches. The learning rate and EMA weight are device
tensors refreshed before each replay; the data and loss generators are registered with the graph, so their
states advance with every replay and checkpoints stay exact.

Exact resume: the checkpoint holds the raw and EMA weights, the optimizer state, the step (which fixes the
learning rate) and the states of the data-order and loss-noise generators of every rank, so a run that is
killed and resumed from its last checkpoint continues exactly as if it had not stopped.
A SIGINT or SIGTERM (``gta_data.stop``) makes the loop checkpoint at the current step boundary and
return; a resume may grow the total of steps or change the batch size (:func:`apply_resume_options`), never
the network.
Data-parallel training: under torchrun each rank draws its own ``batch_size / world_size`` windows
(generators seeded by rank), the weights start from rank 0's, and one all-reduce of a flat buffer holding
every gradient and the loss (:class:`gta_diffusion.distributed.GradientAverage`) makes the gradient that of the
mean loss over the global batch, before clipping, AdamW and the EMA, which every rank then applies alike.
That all-reduce is part of the step, so ``cuda_graph`` captures it too: each rank replays one graph per step.
The single-process step is unchanged (no buffer, no collective).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from gta_data import TrajectoryStore
from gta_data.accel.cuda_graph import CudaGraphRunner
from gta_data.accel.devices import resolve_device
from gta_data.jsonl import JsonlLog
from gta_diffusion._version import __version__
from gta_diffusion.checkpoint import (
    CONFIG_NAME,
    METRICS_NAME,
    latest_checkpoint,
    load_checkpoint,
    read_config,
    remove_partial,
    save_checkpoint,
    truncate_metrics,
    write_json_atomic,
)
from gta_diffusion.config import TrainConfig, WindowConfig, config_from_dict
from gta_diffusion.data import Normalizer, WindowSet, fit_normalizer, loss_mask, resolve_window
from gta_diffusion.distributed import (
    DistInfo,
    GradientAverage,
    barrier,
    broadcast_object,
    broadcast_tensors,
    gather_objects,
)
from gta_diffusion.edm import Denoiser, EDMConfig, edm_loss
from gta_diffusion.errors import DiffusionError
from gta_diffusion.networks import (
    PRESETS,
    TRAJECTORY_KINDS,
    build_network,
    count_parameters,
    network_spec,
    resolve_network_name,
)


def check_train_config(cfg: TrainConfig) -> None:
    """One-line errors for settings no training can use (:meth:`TrainConfig.check`)."""
    cfg.check()


def build_denoiser(network: dict[str, Any], sigma_data: float) -> Denoiser:
    """The denoiser a model's ``config["network"]`` describes. A residual-MLP (SynthER) model records its
    ``style``; models written before it existed used "silu-rff128"."""
    extra = dict(network.get("overrides", {}))
    if network_spec(network["preset"])["kind"] == "residual_mlp":
        extra.setdefault("style", network.get("style", "silu-rff128"))
    net = build_network(network["preset"], network["transition_dim"], network["horizon_rows"], **extra)
    return Denoiser(net, sigma_data=sigma_data)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up (at most 10% of the run, so that short runs
    are not all warm-up), then cosine to ``min_lr_ratio * lr``."""
    warmup = min(cfg.warmup_steps, max(1, cfg.steps // 10))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    span = max(1, cfg.steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def generator_seeds(seed: int, rank: int) -> tuple[int, int]:
    """Seeds of rank ``rank``'s data-order and loss-noise generators (rank 0's alone in one process)."""
    return seed * 1_000_003 + 2 * rank, seed * 1_000_003 + 2 * rank + 1


def _load_store(path: str | Path):
    store = TrajectoryStore.open(path)
    return store, store.load()


class Trainer:
    """One training run: model, EMA, optimizer, generators, and the run directory it checkpoints to.

    Create with :meth:`create` (new run, or resumes the run found in ``run_dir``)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], windows: WindowSet, *,
                 device: torch.device, dist: DistInfo = DistInfo()) -> None:
        self.run_dir, self.config, self.windows, self.device, self.dist = run_dir, config, windows, device, dist
        self.cfg: TrainConfig = config_from_dict(TrainConfig, config["train"])
        self.edm: EDMConfig = EDMConfig(**config["edm"])
        if self.cfg.batch_size % dist.world_size:
            raise DiffusionError(f"batch size {self.cfg.batch_size} is not divisible by {dist.world_size} ranks")
        self.local_batch = self.cfg.batch_size // dist.world_size
        torch.manual_seed(self.cfg.seed)  # identical initial weights on every rank
        self.denoiser = build_denoiser(config["network"], self.edm.sigma_data).to(device)
        broadcast_tensors(dist, list(self.denoiser.state_dict().values()))  # rank 0's weights and buffers on all
        self.params = [p for p in self.denoiser.parameters() if p.requires_grad]
        # Under a process group the gradients live in one flat buffer, averaged by one all-reduce per step.
        self.grad_average = GradientAverage(self.params, error=DiffusionError) if dist.enabled else None
        self.ema = [p.detach().clone() for p in self.denoiser.parameters()]
        self._ema_src = [p.detach() for p in self.denoiser.parameters()]  # views that follow the updates
        use_fused = device.type == "cuda"
        if self.cfg.cuda_graph:
            if device.type != "cuda":
                raise DiffusionError("--cuda-graph needs a CUDA device")
            if self.cfg.compile_mode in ("reduce-overhead", "max-autotune"):
                raise DiffusionError("--cuda-graph captures the whole step: use it without a CUDA-graph compile mode")
        # A tensor learning rate (capturable AdamW) can change between graph replays.
        lr = torch.tensor(self.cfg.lr, device=device) if self.cfg.cuda_graph else self.cfg.lr
        self.opt = torch.optim.AdamW(self.params, lr=lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay,
                                     fused=use_fused, capturable=self.cfg.cuda_graph)
        self._ema_weight = torch.zeros((), device=device)  # 1 - decay, refreshed before every graph replay
        if self.cfg.compile_mode in ("reduce-overhead", "max-autotune") and dist.enabled:
            raise DiffusionError("compile modes with CUDA graphs are for single-process training; under torchrun "
                                 "use --cuda-graph, which captures the whole step, gradient average included")
        self.model: torch.nn.Module = self.denoiser
        self.forward = torch.compile(self.model, mode=self.cfg.compile_mode) if self.cfg.compile else self.model
        self._graph_steps = self.cfg.compile and self.cfg.compile_mode in ("reduce-overhead", "max-autotune")
        self.mask = loss_mask(windows.norm, windows.cfg.horizon).to(device)  # [H+1, D]
        self.inv_count = 1.0 / (float(self.mask.sum()) * self.local_batch)
        data_seed, loss_seed = generator_seeds(self.cfg.seed, dist.rank)
        self.data_gen = torch.Generator(device=device).manual_seed(data_seed)
        self.loss_gen = torch.Generator(device=device).manual_seed(loss_seed)
        self.step_count = 0
        self._saved_step: int | None = None  # the step of the last checkpoint written or loaded here
        self._resume_acc: dict[str, Any] | None = None
        self._zero_accumulators()
        # --cuda-graph: three eager warm-up steps (collectives included: the communicator exists before capture), then
        # the whole step as one graph; the data and loss generators advance with every replay, and gradients are
        # allocated from the graph's pool (under a process group they stay in the flat buffer made above).
        self.graph_runner = CudaGraphRunner(
            self._graph_body, cuda_graph=self.cfg.cuda_graph, device=device, warmup=3,
            generators=(self.data_gen, self.loss_gen),
            before_capture=None if self.grad_average is not None else lambda: self.opt.zero_grad(set_to_none=True),
            error=DiffusionError,
        )

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: str | Path, data_path: str | Path | None, cfg: TrainConfig | None = None,
               wcfg: WindowConfig | None = None, edm: EDMConfig | None = None, *, device: str | torch.device = "cpu",
               dist: DistInfo = DistInfo()) -> Trainer:
        """Start a new run in ``run_dir`` or resume the one there (its saved config wins; ``data_path``
        None means the store recorded in it)."""
        run_dir = Path(run_dir)
        device = torch.device(device)
        # Rank 0 decides between resume and a new run: other ranks could otherwise see the config that rank 0
        # has just written and take the resume path.
        if broadcast_object(dist, (run_dir / CONFIG_NAME).exists()):
            config = read_config(run_dir)
            _require_gta_run(run_dir, config)
            data_path = data_path or config["data"]["path"]
            store, data = _load_store(data_path)
            norm = Normalizer.from_dict(config["normalizer"])
            check_run_data(store, norm, data_path, run_dir)
            recorded = config["data"]
            if (store.num_transitions, store.num_episodes) != (recorded["num_transitions"], recorded["num_episodes"]):
                raise DiffusionError(f"{data_path} ({store.num_transitions} transitions, {store.num_episodes} episodes) "
                                     f"is not the data run {run_dir} was started on ({recorded['path']}: "
                                     f"{recorded['num_transitions']}, {recorded['num_episodes']})")
            wcfg = config_from_dict(WindowConfig, config["window"])
            windows = WindowSet(data, store.episode_ends, norm, wcfg, device)
            trainer = cls(run_dir, config, windows, device=device, dist=dist)
            if dist.is_main:
                remove_partial(run_dir)
            ckpt = latest_checkpoint(run_dir)
            if ckpt is not None:
                trainer.load(ckpt)
            elif dist.is_main:
                truncate_metrics(run_dir, 0)  # stopped before its first checkpoint: it starts from step 0 again
            return trainer
        if data_path is None:
            raise DiffusionError(f"{run_dir} holds no run to resume; give the training data")
        if broadcast_object(dist, run_dir.exists() and any(run_dir.iterdir())):
            raise DiffusionError(f"{run_dir} exists and is not a gta-diffusion run directory")
        cfg, wcfg, edm = cfg or TrainConfig(), wcfg or WindowConfig(), edm or EDMConfig()
        check_train_config(cfg)
        if network_spec(cfg.preset)["kind"] not in TRAJECTORY_KINDS:
            trajectory = [n for n in PRESETS if PRESETS[n]["kind"] in TRAJECTORY_KINDS]
            raise DiffusionError(f"a GTA model needs a trajectory network ({', '.join(trajectory)}), got {cfg.preset!r}")
        if wcfg.horizon < 1:
            raise DiffusionError(f"horizon must be >= 1, got {wcfg.horizon}")
        store, data = _load_store(data_path)
        wcfg = resolve_window(wcfg, store.env_id)  # the config records the terminal penalty used
        norm = fit_normalizer(data, store.episode_ends, wcfg, store.env_id)
        windows = WindowSet(data, store.episode_ends, norm, wcfg, device)
        network = {
            "preset": cfg.preset, "overrides": dict(cfg.network_overrides),
            "transition_dim": norm.transition_dim, "horizon_rows": wcfg.horizon + 1,
        }
        config = {
            "gta_diffusion_version": __version__,
            "train": asdict(cfg), "window": asdict(wcfg), "edm": asdict(edm), "network": network,
            "normalizer": norm.to_dict(), "world_size": dist.world_size,
            "data": {
                "path": str(Path(data_path).resolve()), "env_id": store.env_id,
                "num_transitions": store.num_transitions, "num_episodes": store.num_episodes,
                "num_windows": len(windows), "ref_scores": store.ref_scores,
            },
        }
        trainer = cls(run_dir, config, windows, device=device, dist=dist)
        config["network"]["parameters"] = count_parameters(trainer.denoiser)
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / CONFIG_NAME, config)
        barrier(dist)
        return trainer

    # -- one update -------------------------------------------------------------------------------------

    def _zero_accumulators(self) -> None:
        if hasattr(self, "_loss_sum"):  # zeroed in place: a captured step graph adds into these tensors
            self._loss_sum.zero_()
            self._gnorm_sum.zero_()
        else:
            self._loss_sum = torch.zeros((), device=self.device)
            self._gnorm_sum = torch.zeros((), device=self.device)
        self._acc_steps = 0
        self._acc_t0 = time.perf_counter()

    def step(self) -> torch.Tensor:
        """One optimisation step; returns the (device) mean loss without syncing."""
        decay = min(self.cfg.ema_decay, (1 + self.step_count) / (10 + self.step_count))
        lr = lr_at(self.cfg, self.step_count)
        if self.cfg.cuda_graph:
            return self._graph_step(lr, 1.0 - decay)
        if self._graph_steps:
            torch.compiler.cudagraph_mark_step_begin()  # one training step = one graph-tree step
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss = self._update()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self._ema_src, 1.0 - decay)
        return self._count(loss)

    def _update(self) -> torch.Tensor:
        """Draw a batch, compute the loss, back-propagate, clip and step the optimizer (no host sync)."""
        x0, cond = self.windows.sample(self.local_batch, self.data_gen)  # [B, H+1, D], [B]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            loss = edm_loss(self.forward, x0, cond, cfg=self.edm, loss_mask=self.mask,
                            cond_drop_prob=self.cfg.cond_drop_prob, generator=self.loss_gen)  # [B, H+1, D]
        loss = loss.float().sum() * self.inv_count  # mean over the entries that count
        if self.grad_average is None:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        else:  # the mean over the global batch: gradients and loss averaged over the ranks
            self.grad_average.zero_()
            loss.backward()
            loss = self.grad_average.average(loss)
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        loss = loss.detach()
        self._loss_sum += loss
        self._gnorm_sum += gnorm.detach()
        return loss

    def _graph_body(self) -> torch.Tensor:
        loss = self._update()
        with torch.no_grad():  # ema += (1 - decay) * (param - ema), the weight read from a device tensor
            delta = torch._foreach_sub(self._ema_src, self.ema)
            torch._foreach_mul_(delta, self._ema_weight)
            torch._foreach_add_(self.ema, delta)
        return loss

    def _graph_step(self, lr: float, ema_weight: float) -> torch.Tensor:
        for group in self.opt.param_groups:
            group["lr"].fill_(lr)
        self._ema_weight.fill_(ema_weight)
        return self._count(self.graph_runner())

    def _count(self, loss: torch.Tensor) -> torch.Tensor:
        self.step_count += 1
        self._acc_steps += 1
        return loss

    # -- the loop ---------------------------------------------------------------------------------------

    def train(self, until: int | None = None, *, on_step: Callable[[int], None] | None = None,
              on_log: Callable[[dict[str, Any]], None] | None = None,
              stop: Callable[[], bool] | None = None) -> bool:
        """Run to step ``until`` (default: the configured total), logging and checkpointing on schedule.
        Stopping early (``until`` < total) without a checkpoint at ``until`` behaves like a kill.

        ``stop`` (e.g. :meth:`gta_data.stop.StopSignals.requested`) is asked after every step; once it
        answers True the run checkpoints at that step boundary and returns True. Under torchrun the ranks
        agree on it at metric lines (every ``log_every`` steps), the loop's only synchronisation points."""
        until = self.cfg.steps if until is None else min(until, self.cfg.steps)
        self._zero_accumulators()
        acc, self._resume_acc = self._resume_acc, None
        if acc is not None and "acc_steps" in acc:
            self._loss_sum.fill_(acc["acc_loss_sum"])
            self._gnorm_sum.fill_(acc["acc_gnorm_sum"])
            self._acc_steps = int(acc["acc_steps"])
            self._acc_t0 -= float(acc["acc_seconds"])
        while self.step_count < until:
            self.step()
            if on_step is not None:
                on_step(self.step_count)
            if self.step_count % self.cfg.log_every == 0 or self.step_count == self.cfg.steps:
                record = self._log()
                if on_log is not None:
                    on_log(record)
            if self.step_count % self.cfg.checkpoint_every == 0 or self.step_count == self.cfg.steps:
                self.save()
            if stop is not None and self._stop_agreed(stop):
                self.save()
                return True
        return False

    def _stop_agreed(self, stop: Callable[[], bool]) -> bool:
        if not self.dist.enabled:
            return stop()
        return self.step_count % self.cfg.log_every == 0 and any(gather_objects(self.dist, stop()))

    def _log(self) -> dict[str, Any]:
        n = max(self._acc_steps, 1)
        stats = torch.stack([self._loss_sum, self._gnorm_sum]).cpu() / n  # the one host sync per interval
        dt = time.perf_counter() - self._acc_t0
        record = {"step": self.step_count, "loss": float(stats[0]), "grad_norm": float(stats[1]),
                  "lr": lr_at(self.cfg, self.step_count - 1), "steps_per_s": n / dt if dt > 0 else None,
                  "time": time.time()}
        if self.dist.is_main:
            JsonlLog(self.run_dir / METRICS_NAME).append(record)
        self._zero_accumulators()
        return record

    # -- state ---------------------------------------------------------------------------------------------

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        names = [name for name, _ in self.denoiser.named_parameters()]
        return dict(zip(names, self.ema, strict=True))

    def rng_state(self) -> dict[str, torch.Tensor]:
        return {"data": self.data_gen.get_state(), "loss": self.loss_gen.get_state()}

    def save(self) -> Path | None:
        """Checkpoint the current step (at a step boundary; nothing is written when this process has already
        saved or loaded this very step, so a checkpoint is never rewritten in place)."""
        if self._saved_step == self.step_count:
            return None
        states = gather_objects(self.dist, self.rng_state())
        path = None
        if self.dist.is_main:
            # The running metric sums go along so that the next metric line after a resume is the same.
            acc = {"acc_loss_sum": float(self._loss_sum), "acc_gnorm_sum": float(self._gnorm_sum),
                   "acc_steps": self._acc_steps, "acc_seconds": time.perf_counter() - self._acc_t0}
            rng = {f"{k}.{r}": v for r, s in enumerate(states) for k, v in s.items()}
            path = save_checkpoint(
                self.run_dir, self.step_count, model=self.denoiser.state_dict(), ema=self.ema_state_dict(),
                optimizer=self.opt.state_dict(), rng=rng,
                scalars={"world_size": self.dist.world_size, **acc}, keep=self.cfg.keep_checkpoints,
            )
        self._saved_step = self.step_count
        barrier(self.dist)
        return path

    def load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.device)
        saved_world = int(ckpt["state"].get("world_size", 1))
        if saved_world != self.dist.world_size:
            raise DiffusionError(f"{path} was written by {saved_world} ranks; resume with the same number")
        self.denoiser.load_state_dict(ckpt["model"])
        ema = ckpt["ema"]
        with torch.no_grad():
            for (name, _), buf in zip(self.denoiser.named_parameters(), self.ema, strict=True):
                buf.copy_(ema[name])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.data_gen.set_state(ckpt["rng"][f"data.{self.dist.rank}"])
        self.loss_gen.set_state(ckpt["rng"][f"loss.{self.dist.rank}"])
        self.step_count = int(ckpt["state"]["step"])
        self._saved_step = self.step_count
        self._resume_acc = ckpt["state"]
        if self.dist.is_main:
            truncate_metrics(self.run_dir, self.step_count)


def train(data: str | Path | None, out: str | Path, cfg: TrainConfig | None = None,
          window: WindowConfig | None = None, edm: EDMConfig | None = None, *,
          device: str | torch.device | None = None, until: int | None = None) -> Trainer:
    """Train a GTA denoiser on the store ``data`` into the run directory ``out``, or resume the run there (its
    saved config wins; ``data`` None: the store it recorded). Runs to the configured total of steps, or to step
    ``until`` and checkpoints there (call again to continue). ``device`` None: CUDA when available. Metrics go
    to ``out/metrics.jsonl`` (and the ``cfg.log_to`` copies); :func:`load_model` gives the trained denoiser.

        trainer = gta_diffusion.train("hopper.zarr", "runs/hopper", TrainConfig(steps=100_000))
    """
    from gta_data.metric_sinks import MetricSinks

    trainer = Trainer.create(out, data, cfg, window, edm, device=resolve_device(device, DiffusionError))
    with MetricSinks(trainer.run_dir, trainer.cfg.log_to, name=trainer.run_dir.name, config=trainer.config) as sinks:
        sinks.rewind(trainer.step_count)  # as metrics.jsonl: a resume writes the lines after its checkpoint again
        trainer.train(until, on_log=lambda record: sinks.write(record["step"], "train", record))
    if trainer.step_count < trainer.cfg.steps:
        trainer.save()
    return trainer


def apply_resume_options(run_dir: str | Path, *, steps: int | None = None, batch_size: int | None = None,
                         preset: str | None = None, penalty_in_rewards: bool | None = None,
                         log_to: tuple[str, ...] | None = None, model: str = "gta",
                         dist: DistInfo = DistInfo()) -> list[str]:
    """Options given again when resuming the run in ``run_dir`` (None: not given), against its saved config.

    What changes the model is refused with a one-line error: another network preset, or the terminal
    penalty moved into (or out of) the reward channel. What changes only the rest of the optimisation is
    applied by rewriting ``config.json`` (atomically) and returned as one line each: a new total of steps
    (not below the step of the last checkpoint; the learning-rate schedule follows the new total from the
    resumed step on), a new batch size, and new ``--log-to`` sinks. A run of another ``model`` kind (gta /
    synther) is refused before anything is rewritten. Rank 0 decides; every rank gets its answer."""
    outcome: tuple[str, Any] | None = None
    if dist.is_main:
        try:
            outcome = ("ok", _apply_resume_options(Path(run_dir), steps, batch_size, preset, penalty_in_rewards,
                                                   log_to, model))
        except DiffusionError as exc:
            outcome = ("error", str(exc))
    kind, value = broadcast_object(dist, outcome)
    if kind == "error":
        raise DiffusionError(value)
    return value


def _apply_resume_options(run_dir: Path, steps: int | None, batch_size: int | None, preset: str | None,
                          penalty_in_rewards: bool | None, log_to: tuple[str, ...] | None,
                          model: str) -> list[str]:
    config = read_config(run_dir)
    saved_model = config.get("model", "gta")
    if saved_model != model:
        raise DiffusionError(f"{run_dir} holds a {saved_model} model, not a {model} one (pass --model {saved_model} "
                             "to resume it)")
    saved_preset = resolve_network_name(config["network"]["preset"])
    if preset is not None and resolve_network_name(preset) != saved_preset:
        raise DiffusionError(f"{run_dir} was trained with network preset {saved_preset!r}; a resume cannot change "
                             f"the network (got --network {preset}): start a new run in another directory")
    saved_penalty = bool(config.get("window", {}).get("penalty_in_reward_channel", False))
    if penalty_in_rewards is not None and penalty_in_rewards != saved_penalty:
        raise DiffusionError(f"{run_dir} was trained with the terminal penalty {'in' if saved_penalty else 'out of'} "
                             f"the reward channel; a resume cannot change what the model learns")
    ckpt = latest_checkpoint(run_dir)
    at = int(json.loads((ckpt / "state.json").read_text())["step"]) if ckpt is not None else 0
    train, changes = dict(config["train"]), []
    if steps is not None and steps != train["steps"]:
        if steps < max(at, 1):
            raise DiffusionError(f"{run_dir} is already at step {at}; --steps {steps} would end before it")
        changes.append(f"steps: {train['steps']} -> {steps} (resuming at step {at}; the learning-rate schedule "
                       f"follows the new total from there)")
        train["steps"] = steps
    if batch_size is not None and batch_size != train["batch_size"]:
        world = int(config.get("world_size", 1))
        if batch_size < 1 or batch_size % world:
            raise DiffusionError(f"--batch-size {batch_size} must be positive and divisible by the {world} rank(s)")
        changes.append(f"batch size: {train['batch_size']} -> {batch_size} from step {at} on")
        train["batch_size"] = batch_size
    if log_to is not None and list(log_to) != list(train.get("log_to", [])):
        changes.append(f"log to: {','.join(train.get('log_to', [])) or 'jsonl only'} -> "
                       f"{','.join(log_to) or 'jsonl only'}")
        train["log_to"] = list(log_to)
    if changes:
        write_json_atomic(run_dir / CONFIG_NAME, {**config, "train": train})
    return changes


def check_run_data(store: TrajectoryStore, norm: Any, data_path: str | Path, run_dir: str | Path) -> None:
    """A resumed run must see the data it was fitted on (env and dims of the saved normaliser)."""
    if store.env_id != norm.env_id or store.obs_dim != norm.obs_dim or store.act_dim != norm.act_dim:
        raise DiffusionError(
            f"{data_path} ({store.env_id}, obs {store.obs_dim}, act {store.act_dim}) is not the data of "
            f"run {run_dir} ({norm.env_id}, obs {norm.obs_dim}, act {norm.act_dim})"
        )


def _require_gta_run(run_dir: str | Path, config: dict[str, Any]) -> None:
    kind = config.get("model", "gta")
    if kind != "gta":
        raise DiffusionError(f"{run_dir} holds a {kind} model, not a GTA trajectory model")


def load_model(run_dir: str | Path, device: str | torch.device = "cpu", *, ema: bool = True
               ) -> tuple[Denoiser, Normalizer, WindowConfig, EDMConfig, dict[str, Any]]:
    """The trained denoiser of a run (EMA weights by default) in eval mode, with its normaliser and configs."""
    config = read_config(run_dir)
    _require_gta_run(run_dir, config)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise DiffusionError(f"{run_dir} has no checkpoint yet")
    edm = EDMConfig(**config["edm"])
    denoiser = build_denoiser(config["network"], edm.sigma_data)
    saved = load_checkpoint(ckpt, "cpu")
    weights = saved["ema" if ema else "model"]
    missing = set(dict(denoiser.named_parameters())) - set(weights)
    if missing:
        raise DiffusionError(f"{ckpt} lacks weights {sorted(missing)[:3]}")
    # The full raw state first (buffers, e.g. random Fourier frequencies, are not in the EMA), then the EMA.
    state = dict(saved["model"])
    state.update(weights)
    denoiser.load_state_dict(state)
    denoiser.to(device).eval().requires_grad_(False)
    norm = Normalizer.from_dict(config["normalizer"])
    config = {**config, "checkpoint_step": int(saved["state"]["step"])}  # the step these weights were saved at
    return denoiser, norm, config_from_dict(WindowConfig, config["window"]), edm, config


__all__ = ["TrainConfig", "Trainer", "apply_resume_options", "generator_seeds", "load_model", "lr_at", "train"]
