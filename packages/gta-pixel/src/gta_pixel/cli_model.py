"""The DrQ+BC commands of ``gta-pixel``: pretrain, encode, finetune, evaluate, bench (registered onto the app of
:mod:`gta_pixel.cli`). Each stage reads and writes run directories or stores, so they compose:

    gta-pixel pretrain walker.zarr --out pre --seeds 0-2 --steps 550000
    gta-pixel encode pre walker.zarr --out latent.zarr --seed 0
    gta-diffusion train --data latent.zarr --out model && gta-diffusion augment --model model --data latent.zarr \\
        --dataset-preset vd4rl-medium --out gta.zarr
    gta-pixel finetune pre --data latent.zarr --data gta.zarr --seeds 0 --steps 300000 --out fine
    gta-pixel evaluate fine --episodes 10
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

_APP_DEBUG: list[Callable[[], bool]] = []  # the app's own --debug (gta-pixel --debug <command>)


@contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """Known failures (bad input, unreadable files, a failed compile) as one line and exit code 1; tracebacks
    with the command's or the app's --debug."""
    try:
        yield
    except typer.Exit:  # a RuntimeError to click: a command's own exit status, not a failure
        raise
    except (ValueError, OSError, RuntimeError) as exc:
        if debug or any(flag() for flag in _APP_DEBUG):
            raise
        from gta_data.accel.cuda_graph import describe_error

        message = str(exc).splitlines()[0] if isinstance(exc, (ValueError, OSError)) and str(exc) else (
            describe_error(exc, 300))
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None


def _seed_list(text: str) -> list[int]:
    from gta_rl.seeds import parse_seeds

    return parse_seeds(text)


def _progress(description: str, total: int, start: int):
    from gta_data.progress import progress

    return progress(description, total=total, completed=start, unit="updates")


def _on_progress(bar):
    def update(done: int, metrics: dict | None) -> None:
        info = None
        if metrics:
            info = " ".join(f"{k} {sum(v) / len(v):.4g}" for k, v in metrics.items() if k in ("critic_loss", "bc_mse"))
        bar.update(done, info=info)

    return update


def pretrain_command(
    pixels: Path = typer.Argument(..., help="pixel store (.zarr) to train on"),
    out: Path = typer.Option(..., "--out", help="run directory to create (or to continue with --resume)"),
    steps: int = typer.Option(550_000, "--steps", help="gradient updates per seed (V-D4RL: 1.1M loop steps, "
                              "one update every 2)"),
    seeds: str = typer.Option("0", "--seeds", help="e.g. 0-2 or 0,3: trained together as one stacked network"),
    nstep: int = typer.Option(3, "--nstep", help="n-step returns (V-D4RL's published command: 3)"),
    batch_size: int = typer.Option(256, "--batch-size"),
    hidden_dim: int = typer.Option(1024, "--hidden-dim", help="width of the policy and Q heads (V-D4RL: 1024; "
                                   "smaller for tests)"),
    std_duration: Optional[int] = typer.Option(None, "--std-duration", help="loop steps (2 per update) over "  # noqa: UP045
                                               "which the exploration std falls from 1.0 to 0.1 (default V-D4RL's "
                                               "250k; scale it with --steps for a shorter run; a resume keeps the run's)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast of the encoder and "  # noqa: UP045
                                        "trunk products (default off; a resume keeps the run's; encode and "
                                        "evaluate use the run's)"),
    channels_last: bool = typer.Option(False, "--channels-last", help="channels_last convolutions"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the training step"),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="replay the whole step from a CUDA graph"),
    fast: bool = typer.Option(False, "--fast", help="all four of --bf16 --channels-last --compile --cuda-graph"),
    log_every: int = typer.Option(1000, "--log-every"),
    checkpoint_every: int = typer.Option(10_000, "--checkpoint-every"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its checkpoint"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Pretrain DrQ+BC on a pixel store (GTA C.4 stage 1: the encoder and trunks that define the latent space)."""
    with _errors(debug):
        from dataclasses import replace

        from gta_data.stop import StopSignals
        from gta_pixel.drqbc import DrQBCConfig
        from gta_pixel.pretrain import pretrain

        if fast:
            bf16 = True if bf16 is None else bf16
            channels_last = compile = cuda_graph = True
        config = replace(DrQBCConfig(), nstep=nstep, batch_size=batch_size, hidden_dim=hidden_dim)
        if std_duration is not None:
            config = replace(config, std_duration=std_duration)
        with StopSignals() as signals, _progress("pretrain", steps, 0) as bar:
            agent = pretrain(pixels, out, seeds=_seed_list(seeds), steps=steps, config=config, device=device,
                             bf16=bf16, channels_last=channels_last, compile=compile, cuda_graph=cuda_graph,
                             log_every=log_every, checkpoint_every=checkpoint_every, resume=resume,
                             stop=signals.requested, on_progress=_on_progress(bar))
        _stopped(signals, out, int(agent.step), steps)
        typer.echo(f"{out}: {int(agent.step)} updates of seeds {agent.seed_list}")


def _stopped(signals, out: Path, step: int, steps: int) -> None:
    """A SIGINT or SIGTERM ended training early: say where it stopped and exit with 128 + the signal."""
    if signals.requested() and step < steps:
        typer.echo(f"stopped by {signals.name} at update {step}: checkpoint written; continue with the same "
                   f"command and --resume ({out})", err=True)
        raise typer.Exit(signals.exit_code)


def encode_command(
    run: Path = typer.Argument(..., help="run directory (pretrain or finetune)"),
    pixels: Path = typer.Argument(..., help="pixel store to encode"),
    out: Path = typer.Option(..., "--out", help="latent trajectory store to write (.zarr)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="whose encoder and trunks (default: the run's first)"),  # noqa: UP045
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(1024, "--batch-size", help="observations per encoder call"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing store"),
    debug: bool = typer.Option(False, "--debug"),
) -> None:
    """Encode a pixel store into a latent trajectory store of z_actor, z_critic (GTA C.4 stage 2)."""
    with _errors(debug):
        from gta_pixel.encode import encode

        store = encode(run, pixels, out, seed=seed, device=device, batch_size=batch_size, overwrite=overwrite)
        typer.echo(f"wrote {store.path}: {store.num_transitions} transitions in {store.num_episodes} episodes, "
                   f"{store.obs_dim}-d latents")


def finetune_command(
    run: Path = typer.Argument(..., help="pretrained run directory"),
    data: list[Path] = typer.Option([], "--data", help="latent store; repeat (original, then augmented)"),
    out: Path = typer.Option(..., "--out", help="run directory to create (or to continue with --resume)"),
    steps: int = typer.Option(300_000, "--steps", help="updates per seed (GTA C.4: 300k)"),
    nstep: Optional[int] = typer.Option(None, "--nstep", help="n-step returns, truncated at segment ends "  # noqa: UP045
                                        "(default: the run's)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="default: the run's"),  # noqa: UP045
    device: str = typer.Option("auto", "--device"),
    compile: bool = typer.Option(False, "--compile"),
    cuda_graph: bool = typer.Option(False, "--cuda-graph"),
    log_every: int = typer.Option(1000, "--log-every"),
    checkpoint_every: int = typer.Option(10_000, "--checkpoint-every"),
    resume: bool = typer.Option(False, "--resume"),
    fresh_optimizer: bool = typer.Option(False, "--fresh-optimizer", help="start the heads' Adam moments at zero "
                                         "(default: continue the base run's)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="fine-tune only these seeds of the run, e.g. 1: "  # noqa: UP045
                                        "only the seed whose encoder wrote encode's stores (default: that seed; every seed on "
                                        "stores that name no encoder)"),
    debug: bool = typer.Option(False, "--debug"),
) -> None:
    """Fine-tune the policy and Q heads on latent stores; encoder and trunks stay frozen (GTA C.4 stage 4)."""
    with _errors(debug):
        from gta_data.stop import StopSignals
        from gta_pixel.finetune import finetune

        with StopSignals() as signals, _progress("finetune", steps, 0) as bar:
            tuner = finetune(run, data, out, steps=steps, batch_size=batch_size, nstep=nstep, device=device,
                             compile=compile, cuda_graph=cuda_graph, log_every=log_every,
                             checkpoint_every=checkpoint_every, resume=resume, fresh_optimizer=fresh_optimizer,
                             seeds=None if seeds is None else _seed_list(seeds), stop=signals.requested,
                             on_progress=_on_progress(bar))
        _stopped(signals, out, int(tuner.step), steps)
        typer.echo(f"{out}: {int(tuner.step)} head updates of seeds {tuner.seed_list} on {len(data)} store(s)")


def evaluate_command(
    run: Path = typer.Argument(..., help="run directory (pretrain or finetune)"),
    episodes: int = typer.Option(10, "--episodes", help="episodes per seed (V-D4RL: 10)"),
    workers: int = typer.Option(0, "--workers", help="environment worker processes (0: in this process)"),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(100_000, "--seed", help="first episode seed (every run seed plays the same ones)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="cut episodes at this many steps"),  # noqa: UP045
    debug: bool = typer.Option(False, "--debug"),
) -> None:
    """Evaluate every seed of a run in its pixel task; writes RUN/eval.json (GTA C.4 stage 5)."""
    with _errors(debug):
        import os

        from gta_pixel.evaluate import evaluate

        os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering, as `gta-pixel make`
        result = evaluate(run, episodes=episodes, workers=workers, device=device, seed=seed, max_steps=max_steps)
        for s, r in result["seeds"].items():
            score = "" if r["score"] is None else f", score {r['score']:.1f}"
            typer.echo(f"seed {s}: return {r['mean_return']:.1f}{score}")
        score = "" if result["mean_score"] is None else f", score {result['mean_score']:.1f}"
        typer.echo(f"{run}: mean return {result['mean_return']:.1f}{score} over {episodes} episodes per seed")


def bench_command(
    seeds: int = typer.Option(3, "--seeds", help="seeds per stack"),
    steps: int = typer.Option(50, "--steps", help="timed updates per mode"),
    warmup: int = typer.Option(10, "--warmup", help="untimed updates first (compile, graph capture)"),
    mode: list[str] = typer.Option([], "--mode", help="reference, stacked, stacked-bf16, fast (default: all "
                                   "that run here)"),
    quick: bool = typer.Option(False, "--quick", help="tiny frames and networks (a CPU smoke run)"),
    device: str = typer.Option("auto", "--device"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the rows here"),  # noqa: UP045
    debug: bool = typer.Option(False, "--debug"),
) -> None:
    """DrQ+BC updates per second: the eager reference against the stacked fast path, same process and device."""
    with _errors(debug):
        from rich.console import Console
        from rich.table import Table

        from gta_data.accel.devices import resolve_device
        from gta_pixel.bench import run_bench
        from gta_pixel.errors import RunError
        from gta_rl.checkpoint import write_json

        if min(seeds, steps) < 1 or warmup < 0:
            raise RunError("--seeds and --steps must be positive, --warmup not negative")
        dev = resolve_device(device, RunError)
        rows = run_bench(device=dev, seeds=seeds, steps=steps, warmup=warmup, quick=quick, modes=mode or None)
        base = rows[0].seed_updates_per_s if rows else 1.0
        table = Table(title=f"DrQ+BC updates on {dev} ({'quick sizes' if quick else '84 px, batch 256'}, "
                      f"{seeds} seeds)")
        for col in ("mode", "ms / step", "seed-updates/s", f"x {rows[0].mode}" if rows else "x"):
            table.add_column(col, justify="left" if col == "mode" else "right")
        for row in rows:
            table.add_row(row.mode, f"{1000 * row.seconds_per_step:.2f}", f"{row.seed_updates_per_s:.1f}",
                          f"{row.seed_updates_per_s / base:.2f}")
        Console().print(table)
        if json_out is not None:
            write_json(json_out, {"device": str(dev), "quick": quick, "seeds": seeds, "steps": steps,
                                  "rows": [{"mode": r.mode, "seconds_per_step": r.seconds_per_step,
                                            "seed_updates_per_s": r.seed_updates_per_s} for r in rows]})


def register_model_commands(app: typer.Typer, debug: Callable[[], bool] | None = None) -> None:
    """Add the DrQ+BC stages to the gta-pixel app; ``debug`` reads the app's --debug flag."""
    if debug is not None:
        _APP_DEBUG.append(debug)
    app.command("pretrain")(pretrain_command)
    app.command("encode")(encode_command)
    app.command("finetune")(finetune_command)
    app.command("evaluate")(evaluate_command)
    app.command("bench")(bench_command)
