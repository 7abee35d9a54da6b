"""Command line interface of gta-diffusion: ``train`` a GTA denoiser on a store, ``augment`` a store with it.

Multi-GPU: launch either command with ``torchrun --nproc-per-node N -m gta_diffusion.cli ...``
(data-parallel training, gradients averaged by one all-reduce per step; augmentation sharded over ranks and
merged by rank 0).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from gta_diffusion.cli_support import LOG_TO_HELP as _LOG_TO_HELP
from gta_diffusion.cli_support import THREADS_HELP as _THREADS_HELP
from gta_diffusion.cli_support import errors as _errors
from gta_diffusion.cli_support import run_training
from gta_diffusion.cli_support import sinks as _sinks
from gta_diffusion.cli_support import threads_note as _threads_note
from gta_diffusion.config import SYNTHER_TRAIN, AugmentConfig, TrainConfig, WindowConfig, default, merge


def _train(text: str, name: str) -> str:
    return f"{text} Default: {default(TrainConfig, name)}."


def _window(text: str, name: str) -> str:
    return f"{text} Default: {default(WindowConfig, name)}."


def _aug(text: str, name: str) -> str:
    return f"{text} Default: {default(AugmentConfig, name)}."


def _both(name: str) -> str:
    """The defaults of a training setting for both models: TrainConfig's (gta), SYNTHER_TRAIN's (synther)."""
    gta = default(TrainConfig, name)
    return f"Default: gta {_show(gta)}; synther {_show(SYNTHER_TRAIN.get(name, gta))}."


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _settings(label: str, cfg: Any) -> str:
    """One line with every setting of a resolved config, as it will be recorded."""
    return f"{label} settings: " + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items())


app = typer.Typer(
    no_args_is_help=True,
    help="GTA conditional trajectory diffusion (EDM, MLP-Mixer temporal U-Nets, classifier-free guidance): "
    "training and augmentation.",
)


@app.callback()
def main() -> None:
    """GTA conditional trajectory diffusion: training and augmentation (GTA Sec. 4)."""


@app.command()
def version() -> None:
    """Print the package version."""
    from gta_diffusion._version import __version__

    typer.echo(__version__)


@app.command()
def train(
    data: Path = typer.Option(None, "--data", help="Training store (.zarr); optional when resuming a run."),
    out: Path = typer.Option(..., "--out", help="Run directory (created, or resumed if it holds a run)."),
    model: str = typer.Option("gta", "--model", help="gta (trajectory model, Sec. 4.1) | synther (baseline)."),
    network: str = typer.Option(None, "--network", help="Denoiser network. gta: fast-mixer (29.5M params, this "
                                "package's design) | mixer-unet (29.6M, GTA's A.2 network) | fast-mixer-small (CPU); "
                                f"synther: synther (25.6M) | synther-small. {_both('preset')}"),
    steps: int = typer.Option(None, help=f"Gradient steps (Table 6). {_both('steps')}"),
    batch_size: int = typer.Option(None, help="Global batch size. Default: gta "
                                   f"{default(TrainConfig, 'batch_size')}; synther 1024, 256 below 800k transitions."),
    lr: float = typer.Option(None, help=_train("Peak learning rate (cosine schedule with warm-up).", "lr")),
    warmup_steps: int = typer.Option(None, help=f"Linear warm-up steps. {_both('warmup_steps')}"),
    horizon: int = typer.Option(None, help=_window("H: transitions per window (H+1 rows are modelled).", "horizon")),
    cond_scale: float = typer.Option(None, help=_window("Condition = cond_scale x discounted return.", "cond_scale")),
    terminal_penalty: float = typer.Option(None, help="Added to terminal rewards for the condition (A.1). "
                                           "Default: -100, or 0 for goal-reaching tasks (mazes, kitchen)."),
    penalty_in_rewards: bool = typer.Option(None, "--penalty-in-rewards",
                                            help="A.1's variant: the penalty also enters the reward channel the "
                                            "model learns (augment removes it from generated rewards)."),
    ema_decay: float = typer.Option(None, help=f"EMA decay of the weights used for sampling. {_both('ema_decay')}"),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network."),
    compile_mode: str = typer.Option(None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph",
                                    help="Capture the whole training step in one CUDA graph (under torchrun: "
                                    "on every rank, the gradient all-reduce included)."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    seed: int = typer.Option(None, help=_train("Seed of weights, data order and loss noise.", "seed")),
    log_every: int = typer.Option(None, help=_train("Steps between metric lines.", "log_every")),
    checkpoint_every: int = typer.Option(None, help=f"Steps between checkpoints. {_both('checkpoint_every')}"),
    stop_after: int = typer.Option(None, help="Checkpoint and stop at this step (resume later; for job limits)."),
    log_to: str = typer.Option(None, "--log-to", help=_LOG_TO_HELP),
    threads: int = typer.Option(None, "--threads", help=_THREADS_HELP),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Train (or resume) a GTA denoiser on a trajectory store (GTA Sec. 4.1, Table 6), or SynthER's model.

    Options not given take the defaults of TrainConfig and WindowConfig (SynthER: its own, config.SYNTHER_TRAIN);
    a resumed run keeps its saved config, except for the settings a resume may change."""
    with _errors(debug):
        from gta_diffusion.errors import DiffusionError

        if stop_after is not None and stop_after < 1:
            raise DiffusionError(f"--stop-after must be a positive step, got {stop_after}")
        # Only what was given: None (and a flag left off) means "the config's default" / "as the saved run".
        given = {"preset": network, "steps": steps, "batch_size": batch_size, "lr": lr, "warmup_steps": warmup_steps,
                 "ema_decay": ema_decay, "bf16": bf16 or None, "compile": compile or None,
                 "compile_mode": compile_mode, "cuda_graph": cuda_graph or None, "seed": seed,
                 "log_every": log_every, "checkpoint_every": checkpoint_every, "log_to": _sinks(log_to)}
        window = {"horizon": horizon, "cond_scale": cond_scale, "terminal_penalty": terminal_penalty,
                  "penalty_in_reward_channel": penalty_in_rewards}
        ignored = _ignored_on_resume(out, {**given, **window})
        if model == "synther":
            from gta_diffusion.baselines.cli import train_synther

            if penalty_in_rewards or any(v is not None for k, v in window.items() if k != "penalty_in_reward_channel"):
                raise DiffusionError("--horizon, --cond-scale, --terminal-penalty and --penalty-in-rewards are for "
                                     "the GTA model (SynthER models single transitions)")
            return train_synther(data, out, given, device=device, stop_after=stop_after, threads=threads,
                                 ignored=ignored)
        if model != "gta":
            raise DiffusionError(f"unknown model {model!r} (choose gta or synther)")
        _train_gta(data, out, given, window, device=device, stop_after=stop_after, threads=threads, ignored=ignored)


def _train_gta(data: Path | None, out: Path, given: dict[str, Any], window: dict[str, Any], *, device: str | None,
               stop_after: int | None, threads: int | None, ignored: str | None) -> None:
    from gta_diffusion.distributed import init_distributed, shutdown
    from gta_diffusion.threads import set_cpu_threads
    from gta_diffusion.training import Trainer, apply_resume_options

    resuming = (out / "config.json").exists()
    cfg, wcfg = merge(TrainConfig, given), merge(WindowConfig, window)
    if not resuming:
        cfg.check()  # before any process group or data is touched
    dist, dev = init_distributed(device)
    try:
        set_cpu_threads(threads, dev)
        changes = []
        if resuming:
            changes = apply_resume_options(out, steps=given["steps"], batch_size=given["batch_size"],
                                           preset=given["preset"], penalty_in_rewards=window["penalty_in_reward_channel"],
                                           log_to=given["log_to"], dist=dist)
        trainer = Trainer.create(out, data, cfg, wcfg, device=dev, dist=dist)
        if dist.is_main:
            facts, norm = trainer.config["data"], trainer.windows.norm
            verb = f"resuming at step {trainer.step_count} (saved config is used)" if resuming else "new run"
            for line in changes:
                typer.echo(f"changed on resume: {line}")
            if ignored:
                typer.echo(ignored)
            typer.echo(f"{out}: {verb}; {facts['env_id']}, {facts['num_windows']} windows of "
                       f"H={trainer.windows.cfg.horizon}, {trainer.config['network']['parameters']:,} parameters, "
                       f"{dist.world_size} rank(s) on {dev}{_threads_note(dev)}")
            typer.echo(_settings("train", trainer.cfg))
            if norm.skipped_episodes:
                typer.echo(f"skipped {norm.skipped_episodes} episodes shorter than H "
                           f"({norm.skipped_transitions} transitions)")
        run_training(trainer, out, stop_after, show=dist.is_main)
    finally:
        shutdown(dist)


# What `train` applies on a resume (training.apply_resume_options); every other option given then is ignored.
_RESUME_MAY_CHANGE = ("steps", "batch_size", "preset", "log_to", "penalty_in_reward_channel")
_OPTION_NAMES = {"preset": "network"}


def _ignored_on_resume(out: Path, given: dict[str, Any]) -> str | None:
    """The line that names the options given to a resume that it does not apply (None: not a resume, or none)."""
    if not (out / "config.json").exists():
        return None
    ignored = [name for name, value in given.items() if value is not None and name not in _RESUME_MAY_CHANGE]
    if not ignored:
        return None
    return ("ignored on resume (the saved run's settings are kept): "
            + ", ".join("--" + _OPTION_NAMES.get(n, n).replace("_", "-") for n in ignored))


@app.command()
def augment(
    out: Path = typer.Option(..., "--out", help="Augmented store to write (.zarr)."),
    method: str = typer.Option("gta", help="gta (Sec. 4.2) | s4rl (state noise, C.1) | synther (baseline)."),
    model: Path = typer.Option(None, "--model", help="Run directory of a trained model (gta, synther)."),
    data: Path = typer.Option(None, "--data", help="Source store, the original data (gta, s4rl)."),
    sigma: float = typer.Option(None, help="s4rl: std of the Gaussian state noise (default: C.1's 3e-4)."),
    noise_scale: str = typer.Option(None, help="s4rl: state_std (sigma in z-scored state units, as the authors' "
                                    "code; the default) | absolute (raw units)."),
    dataset_preset: str = typer.Option(None, help="Fill mu/alpha/reweighting from the paper (see `presets`)."),
    mu: float = typer.Option(None, help=_aug("Partial noising ratio, 0 < mu <= 1.", "mu")),
    alpha: float = typer.Option(None, help=_aug("Return multiplier of the amplified condition.", "alpha")),
    num_transitions: int = typer.Option(None, help=_aug("Transitions to generate.", "num_transitions")),
    guidance: float = typer.Option(None, help=_aug("Guidance weight w of Eq. 4 (the sampler's scale is s = w + 1).",
                                                   "guidance_weight")),
    conditioning: str = typer.Option(None, help=_aug("amplified | fixed | none | inpaint.", "conditioning")),
    fixed_return: float = typer.Option(None, help="Target return for --conditioning fixed."),
    reweight: str = typer.Option(None, help=_aug("none | bins (Eq. 13) | episodes (sparse tasks).", "reweight")),
    num_bins: int = typer.Option(None, help=_aug("N_B of Eq. 13.", "num_bins")),
    success_weight: float = typer.Option(None, help=_aug("c: weight of successful episodes.", "success_weight")),
    reweight_clip: float = typer.Option(None, help="bins: clip each window's weight (v_j / sum v) / |B_j| at this "
                                        "value before normalising (the authors' code: 5.0; default: no clip)."),
    batch_size: int = typer.Option(None, help=f"Windows per sampler call (default {default(AugmentConfig, 'batch_size')}"
                                   "; synther: transitions, 100k)."),
    num_steps: int = typer.Option(None, help="Sampler steps K (default: the model's, 128)."),
    seed: int = typer.Option(None, help=_aug("Seed of the source choice and of the per-window seeds.", "seed")),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the denoiser."),
    compile_mode: str = typer.Option(None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)."),
    clip_actions: bool = typer.Option(True, "--clip-actions/--no-clip-actions",
                                      help="gta, synther: clip generated actions to the source (training) data's "
                                      "range per dimension."),
    device: str = typer.Option(None, help="cpu, cuda ... (default: cuda if available)."),
    threads: int = typer.Option(None, "--threads", help=_THREADS_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output store."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Generate an augmented store: GTA's partial noising and amplified return guidance (Sec. 4.2), or the
    S4RL and SynthER baselines. GTA: options not given take the dataset preset's values, then AugmentConfig's."""
    _require_options(method, model=model, data=data, debug=debug)
    if method == "s4rl":
        from gta_diffusion.baselines.cli import augment_s4rl_command

        return augment_s4rl_command(data=data, out=out, overwrite=overwrite, debug=debug, sigma=sigma,
                                    num_transitions=num_transitions, seed=seed, scale=noise_scale)
    if method == "synther":
        from gta_diffusion.baselines.cli import augment_synther_command

        return augment_synther_command(model=model, out=out, device=device, threads=threads, overwrite=overwrite,
                                       debug=debug, num_transitions=num_transitions, batch_size=batch_size,
                                       num_steps=num_steps, seed=seed, bf16=bf16, compile=compile,
                                       clip_actions=clip_actions)
    with _errors(debug):
        given = {"mu": mu, "alpha": alpha, "guidance_weight": guidance, "conditioning": conditioning,
                 "fixed_return": fixed_return, "reweight": reweight, "num_bins": num_bins,
                 "success_weight": success_weight, "reweight_clip": reweight_clip, "num_transitions": num_transitions,
                 "batch_size": batch_size, "num_steps": num_steps, "seed": seed, "bf16": bf16 or None,
                 "compile": compile or None, "compile_mode": compile_mode, "clip_actions": clip_actions}
        if out.exists() and not overwrite:
            from gta_diffusion.errors import DiffusionError

            raise DiffusionError(f"{out} already exists (use --overwrite to replace it)")
        cfg = augment_config(dataset_preset, given, show=int(os.environ.get("RANK", "0")) == 0)
        _augment_gta(model, data, out, cfg, device=device, threads=threads, overwrite=overwrite)


def augment_config(dataset_preset: str | None, given: dict[str, Any], *, show: bool = True) -> AugmentConfig:
    """The one merge of a GTA augmentation's settings: AugmentConfig's defaults, then the dataset preset's
    values (GTA Tables 8-9), then the options given (None: not given); checked, and printed when ``show``."""
    from gta_diffusion.presets import dataset_preset as lookup

    cfg = merge(AugmentConfig, lookup(dataset_preset) if dataset_preset else None, given)
    cfg.check()
    if show:
        typer.echo(_settings(f"augment (preset {dataset_preset})" if dataset_preset else "augment", cfg))
    return cfg


def _augment_gta(model: Path, data: Path, out: Path, cfg: AugmentConfig, *, device: str | None,
                 threads: int | None, overwrite: bool) -> None:
    from gta_data.progress import progress
    from gta_diffusion.augmentation import augment as run_augment
    from gta_diffusion.distributed import init_distributed, shutdown
    from gta_diffusion.threads import set_cpu_threads

    dist, dev = init_distributed(device)
    try:
        set_cpu_threads(threads, dev)
        with progress("augment", unit="windows", enabled=dist.is_main) as bar:
            bar.update(info=f"mu={cfg.mu} alpha={cfg.alpha}")
            store = run_augment(model, data, out, cfg, device=dev, dist=dist, overwrite=overwrite,
                                on_start=lambda n: bar.update(total=n), progress=bar.advance)
        if dist.is_main and store is not None:
            typer.echo(f"wrote {store.path}: {store.num_transitions} transitions in {store.num_episodes} segments")
            prov = store.provenance
            if prov.get("model_step") is not None and prov["model_step"] < prov["model_train_steps"]:
                typer.echo(f"warning: the model's training stopped at step {prov['model_step']} of "
                           f"{prov['model_train_steps']}", err=True)
    finally:
        shutdown(dist)


_METHOD_NEEDS = {"gta": ("model", "data"), "s4rl": ("data",), "synther": ("model",)}


def _require_options(method: str, *, debug: bool, **given: Path | None) -> None:
    with _errors(debug):
        from gta_diffusion.errors import DiffusionError

        if method not in _METHOD_NEEDS:
            raise DiffusionError(f"unknown method {method!r} (choose {', '.join(_METHOD_NEEDS)})")
        missing = [f"--{name}" for name in _METHOD_NEEDS[method] if given[name] is None]
        if missing:
            raise DiffusionError(f"--method {method} needs {' and '.join(missing)}")


@app.command()
def presets() -> None:
    """List the dataset presets (mu, alpha, reweighting from GTA Tables 8-9)."""
    from gta_diffusion.presets import DATASET_PRESETS

    for name, values in DATASET_PRESETS.items():
        typer.echo(f"{name:28s} " + " ".join(f"{k}={v}" for k, v in values.items()))


if __name__ == "__main__":
    app()
