"""Command line interface of gta-rl: train, evaluate and summarise offline RL runs (GTA stage C)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Optional

import typer

from gta_data.cli_errors import fail, one_line_errors
from gta_rl.config import ALGORITHM_DEFAULTS, DT_DEFAULTS, default_of

# The bad-input errors of gta-rl's commands, printed as one line: gta-rl's (RunError, ConfigError, SACError,
# SeedSpecError) and gta-data's (StoreError, SinkError, ...) are ValueErrors.
_KNOWN = (ValueError, FileNotFoundError)

app = typer.Typer(no_args_is_help=True, help="Offline RL on trajectory stores: TD3+BC, IQL, CQL, MCQ and Decision Transformer, many seeds at once, with gymnasium evaluation.")


@app.callback()
def main() -> None:
    """Offline RL on trajectory stores: TD3+BC, IQL, CQL, MCQ and Decision Transformer, many seeds at once, with gymnasium evaluation."""


@app.command()
def version() -> None:
    """Print the package version."""
    from gta_rl._version import __version__

    typer.echo(__version__)


def _compile_failure(exc: Exception, out: Path, fullgraph: bool) -> str:
    """One line for a failed torch.compile: the wrapped error and which flag to drop."""
    from gta_data.accel.cuda_graph import describe_error
    from gta_rl.training import CHECKPOINT

    without = "without --fullgraph (or without --compile)" if fullgraph else "without --compile"
    if (out / CHECKPOINT).exists():  # e.g. a --resume run: its checkpoint is untouched
        how = f"continue with --resume {without}; the checkpoint is intact"
    else:
        how = f"run again {without} (the run directory holds no checkpoint yet, so the same --out can be reused)"
    return f"torch.compile failed ({describe_error(exc, 300)}); {how}"


def _opt(name: str, *flags: str, **kwargs) -> typer.models.OptionInfo:
    """An option for the RunConfig setting ``name``: its default is the dataclass's (declared there only)."""
    default = default_of(name)
    if isinstance(default, tuple):  # seeds
        default = ",".join(map(str, default))
    return typer.Option(default, *flags, **kwargs)


_PER_ALGO = "default {:,} (dt: {:,})"


@app.command()
def train(
    algorithm: str = typer.Argument(..., help="td3bc, iql, cql, mcq or dt"),
    data: list[Path] = typer.Option([], "--data", help="training store; repeat (original first, then augmented)"),
    arm: list[str] = typer.Option([], "--arm", help="NAME=STORE[,STORE...]: instead of --data, one arm of a "
                                  "comparison, repeatable; the arms train together as one stack, each into its own "
                                  "run directory OUT/NAME, as it would alone"),
    out: Path = typer.Option(..., "--out", help="run directory (with --arm: the folder of the arms' run directories)"),
    seeds: str = _opt("seeds", "--seeds", help="e.g. 0-7 or 0,3,5: trained together in one process"),
    steps: Optional[int] = _opt("steps", "--steps", help=_PER_ALGO.format(  # noqa: UP045
        ALGORITHM_DEFAULTS["steps"], DT_DEFAULTS["steps"])),
    batch_size: Optional[int] = _opt("batch_size", "--batch-size", help=_PER_ALGO.format(  # noqa: UP045
        ALGORITHM_DEFAULTS["batch_size"], DT_DEFAULTS["batch_size"])),
    target_return: list[float] = typer.Option([], "--target-return",
                                              help="dt: evaluation target return (raw), repeatable; default per env"),
    eval_every: int = _opt("eval_every", "--eval-every", help="0: evaluate only at the end"),
    eval_episodes: Optional[int] = _opt("eval_episodes", "--eval-episodes",  # noqa: UP045
                                        help="episodes per seed and evaluation (default: 100 for mazes and dt, 10 "
                                        "otherwise, as CORL); 0: no evaluation"),
    log_every: int = _opt("log_every", "--log-every"),
    checkpoint_every: int = _opt("checkpoint_every", "--checkpoint-every", help="0: at every evaluation"),
    mix_ratio: Optional[float] = _opt("mix_ratio", "--mix-ratio",  # noqa: UP045
                                      help="fraction of each batch from the first store (default: uniform)"),
    device: str = _opt("device", "--device"),
    compile: bool = _opt("compile", "--compile", help="torch.compile the training step"),
    cuda_graph: bool = _opt("cuda_graph", "--cuda-graph", help="capture the training step in CUDA graphs"),
    tf32: bool = _opt("tf32", "--tf32", help="TF32 tensor-core matmuls on CUDA (faster, ~1e-3 relative)"),
    bf16: bool = _opt("bf16", "--bf16", help="bf16 mixed precision: hidden-layer matmuls in bf16, outputs, "
                      "losses and Adam in fp32 (faster on tensor cores, ~4e-3 relative)"),
    fused_mlp: bool = _opt("fused_mlp", "--fused-mlp",
                           help="with --bf16 on CUDA: every pass of a 256-256 network as Triton kernels "
                           "(a forward pass in one kernel, a backward pass in one plus two cuBLAS products)"),
    fullgraph: bool = _opt("fullgraph", "--fullgraph",
                           help="compile the whole step, gradients included, as one graph (implies --compile)"),
    eval_async: bool = _opt("eval_async", "--eval-async",
                            help="evaluation envs sharded over worker processes (one per CPU, less two)"),
    eval_overlap: bool = _opt("eval_overlap", "--eval-overlap/--no-eval-overlap",
                              help="evaluate a copy of the policies in a background thread while training "
                              "goes on (same scores; not for dt)"),
    preset: str = _opt("preset", "--preset", help="per-family settings: auto, none or a preset name"),
    set_: list[str] = typer.Option([], "--set", help="algorithm setting key=value (JSON value), repeatable"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads of torch on a CPU device (default: "  # noqa: UP045
                                          "OMP_NUM_THREADS if set, else 1; ignored on CUDA)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its checkpoint"),
    log_to: str = typer.Option("", "--log-to", help="also copy the metrics to csv, tensorboard and/or wandb "
                               "(comma-separated; tensorboard and wandb need the extras gta-rl[tensorboard], "
                               "gta-rl[wandb])"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Train S seeds of an offline RL algorithm at once on one or more stores."""
    from gta_rl.config import RunConfig

    settings = dict(steps=steps, batch_size=batch_size, eval_every=eval_every, eval_episodes=eval_episodes,
                    log_every=log_every, checkpoint_every=checkpoint_every, mix_ratio=mix_ratio, device=device,
                    compile=compile, cuda_graph=cuda_graph, tf32=tf32, bf16=bf16, fused_mlp=fused_mlp,
                    fullgraph=fullgraph, eval_async=eval_async, eval_overlap=eval_overlap, preset=preset,
                    log_to=log_to)
    with _errors(debug, compiling=compile or fullgraph, out=out, fullgraph=fullgraph):
        arms = _parse_arms(arm, data, out)
        _set_threads(threads, device)
        cfg = RunConfig(algorithm, data=next(iter(arms.values()))[0], seeds=seeds,
                        overrides=_overrides(algorithm, set_, target_return), **settings)
        results = _train_with_progress(cfg, arms, named=bool(arm), resume=resume)
    for name, result in results.items():
        for line in final_lines(name, result, arms[name][1]):
            typer.echo(line)


def _overrides(algorithm: str, specs: list[str], target_return: list[float]) -> dict:
    """The algorithm settings of ``--set key=value`` and ``--target-return`` (the dt's target_returns)."""
    from gta_rl.algorithms import ConfigError, parse_override

    overrides = dict(parse_override(s) for s in specs)
    if target_return:
        if algorithm.lower() != "dt":
            raise ConfigError("--target-return is a Decision Transformer (dt) option")
        overrides["target_returns"] = tuple(target_return)
    return overrides


def _train_with_progress(cfg, arms: dict, named: bool, resume: bool) -> dict:
    """``train_arms`` with a progress bar that shows the latest loss and scores."""
    from gta_data.progress import progress
    from gta_rl.training import resolve_steps, train_arms

    what = f"{len(arms)} arms x " if named else ""
    steps = resolve_steps(cfg, [out for _, out in arms.values()], resume).steps
    with progress(f"{cfg.algorithm} {what}{len(cfg.seeds)} seeds", total=steps, unit="steps") as bar:
        status = _TrainStatus(bar, arms, len(cfg.seeds))
        return train_arms(cfg, arms, resume=resume, progress=lambda done, total: bar.update(done), on_event=status)


@contextlib.contextmanager
def _errors(debug: bool, compiling: bool = False, out: Path | None = None, fullgraph: bool = False):
    """gta-data's one-line errors for what `gta-rl train` refuses, a stopped run's exit code (128 + the
    signal), and a torch.compile failure as one line that says which flag to drop."""
    import torch

    from gta_rl.config import RunError
    from gta_rl.run_dir import RunStopped

    try:
        with one_line_errors(_KNOWN, debug):
            yield
    except RunStopped as exc:  # SIGINT / SIGTERM: every run directory holds a checkpoint of the same step
        typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code) from None
    except (torch._dynamo.exc.TorchDynamoException, RuntimeError) as exc:
        # Compiler failures print pages otherwise. A RuntimeError is one only when it comes from a compiled
        # function (seen on CUDA: "Function CompiledFunctionBackward returned an invalid gradient", DT, 1 seed).
        compiled = isinstance(exc, torch._dynamo.exc.TorchDynamoException) or "CompiledFunction" in str(exc)
        if isinstance(exc, typer.Exit) or not compiled or not compiling:
            raise
        fail(RunError(_compile_failure(exc, out, fullgraph)), debug)


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def final_lines(name: str, result: dict, out: Path) -> list[str]:
    """What `gta-rl train` prints at the end of one run (arm): each seed's final and best normalized score,
    then their mean +- sample std (ddof=1) over the seeds."""
    import numpy as np

    lines = [f"arm {name} ({out}):"] if name else []
    for seed, r in result["seeds"].items():
        by_target = "".join(f", target {t}: {v:.2f}" for t, v in (r.get("final_by_target") or {}).items())
        lines.append(f"seed {seed}: final {_score(r['final_score'])}, best {_score(r['best_score'])}{by_target}")
    summary = []
    for which in ("final", "best"):
        values = [r[f"{which}_score"] for r in result["seeds"].values() if r[f"{which}_score"] is not None]
        if len(values) >= 2:
            summary.append(f"{which} {np.mean(values):.2f} +- {np.std(values, ddof=1):.2f}")
        elif values:
            summary.append(f"{which} {values[0]:.2f}")
    n = len(result["seeds"])
    if summary:
        spread = " (mean +- std, ddof=1)" if n >= 2 else ""
        lines.append(f"{name or 'run'}: {', '.join(summary)} over {n} seed{'s' if n != 1 else ''}{spread}")
    else:
        lines.append(f"{name or 'run'}: no evaluation (--eval-episodes 0)")
    return lines


class _TrainStatus:
    """Prints the run directories and a resume as the run starts, and keeps the bar's text current: the
    latest training loss and the latest mean evaluation score (per arm, over its seeds)."""

    LOSSES = ("critic_loss", "q_loss", "loss")  # the loss shown: the first of these an algorithm reports

    def __init__(self, bar, arms: dict, num_seeds: int) -> None:
        self.bar, self.arms, self.num_seeds = bar, arms, num_seeds
        self.loss: float | None = None
        self.scores: dict[str, float] = {}

    def __call__(self, kind: str, step: int, values: dict[str, list[float]]) -> None:
        import numpy as np

        if kind == "start":
            dirs = [str(out) for _, out in self.arms.values()]
            typer.echo(f"run director{'ies' if len(dirs) > 1 else 'y'}: {', '.join(dirs)}")
            if step > 0:
                typer.echo(f"resuming at step {step}")
            typer.echo(_resolved(next(iter(self.arms.values()))[1]))
            self.bar.begin(step)
        if kind == "train":
            key = next((k for k in self.LOSSES if k in values),
                       next((k for k in values if k.endswith("loss")), None))
            if key is not None:
                self.loss = float(np.mean(values[key]))
        elif values.get("score_mean"):  # an evaluation, or the latest one of a resumed run
            scores = values["score_mean"]
            for i, name in enumerate(self.arms):
                self.scores[name] = float(np.mean(scores[i * self.num_seeds:(i + 1) * self.num_seeds]))
        parts = [f"loss {self.loss:.4g}"] if self.loss is not None else []
        if self.scores:
            parts.append("score " + ", ".join(f"{n} {v:.2f}" if n else f"{v:.2f}" for n, v in self.scores.items()))
        self.bar.update(info=", ".join(parts))


def _resolved(out: Path) -> str:
    """The resolved config of a run that has started, as its config.json holds it."""
    from gta_rl.config import ResolvedRun
    from gta_rl.run_dir import read_config

    return ResolvedRun.from_json(read_config(out)).describe()


def _set_threads(threads: int | None, device: str) -> None:
    """The CPU thread rule of gta_data.threads (small CPU steps slow down badly with busy cores)."""
    import torch

    from gta_data.threads import cpu_threads

    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    chosen = cpu_threads(threads, "cuda" if on_cuda else "cpu")
    if chosen is not None:
        torch.set_num_threads(chosen)


def _parse_arms(specs: list[str], data: list[Path], out: Path) -> dict[str, tuple[tuple[str, ...], Path]]:
    """``--arm NAME=STORE[,STORE...]`` -> {name: (stores, out/NAME)}; ``--data`` alone -> {"": (stores, out)}."""
    import re

    from gta_rl.config import RunError

    if specs and data:
        raise RunError("pass either --data (one run) or --arm (several), not both")
    if not specs:
        if not data:
            raise RunError("no training data given (pass --data at least once, or --arm)")
        return {"": (tuple(str(p) for p in data), out)}
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file: with --arm it is the folder of the arms' run directories")
    arms: dict[str, tuple[tuple[str, ...], Path]] = {}
    for spec in specs:
        name, sep, stores = spec.partition("=")
        paths = tuple(p for p in stores.split(",") if p)
        if not sep or not paths or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
            raise RunError(f"--arm {spec!r}: expected NAME=STORE[,STORE...] with a NAME of letters, digits, '_', "
                           "'-' or '.'")
        if name in arms:
            raise RunError(f"--arm {name!r} given twice")
        arms[name] = (paths, out / name)
    return arms


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="run directory"),
    episodes: int = typer.Option(None, "--episodes", help="default: as many as the run evaluated"),
    device: str = typer.Option("auto", "--device"),
    eval_async: Optional[bool] = typer.Option(  # noqa: UP045
        None, "--eval-async/--in-process",
        help="policies acting in env worker processes on the CPU, or in this process on --device (default: as "
        "the run evaluated while training, so its last evaluation is reproduced)"),
    debug: bool = typer.Option(False, "--debug"),
) -> None:
    """Evaluate the checkpointed policies of a run and print each seed's normalized score."""
    from gta_rl.training import RunError, default_eval_episodes, evaluate_agent, load_run, make_evaluator

    with one_line_errors(_KNOWN, debug):
        run, agent, meta = load_run(run_dir, device)
        if episodes is None:
            episodes = run.config.eval_episodes or default_eval_episodes(run.env_id, run.algorithm)
        if episodes < 1:
            raise RunError(f"--episodes must be >= 1, got {episodes}")
        evaluator = make_evaluator(run, episodes, run.config.eval_async if eval_async is None else eval_async)
        try:
            scores = evaluate_agent(agent, evaluator, run)
        finally:
            evaluator.close()
    for i, seed in enumerate(run.seeds):
        by_target = "".join(f", target {t}: return {v['return_mean'][i]:.2f} score {v['score_mean'][i]:.2f}"
                            for t, v in scores.get("targets", {}).items())
        typer.echo(f"seed {seed}: step {meta['step']}, return {scores['return_mean'][i]:.2f}, "
                   f"score {scores['score_mean'][i]:.2f}{by_target}")


@app.command()
def summary(
    run_dirs: list[Path] = typer.Argument(..., help="run directories (one per task)"),
    which: str = typer.Option("final", "--which", help="final or best evaluation of each seed"),
    ddof: int = typer.Option(1, "--ddof", help="delta degrees of freedom of the std (1: the sample std, as "
                             "gta-eval's tables)"),
    as_json: bool = typer.Option(False, "--json"),
    allow_unfinished: bool = typer.Option(False, "--allow-unfinished",
                                          help="include runs stopped before their last step (marked)"),
    debug: bool = typer.Option(False, "--debug"),
) -> None:
    """Mean +- std over seeds per run; over several runs, the appendix F.2 average."""
    from rich.console import Console
    from rich.table import Table

    from gta_rl.summary import summarize

    if which not in ("final", "best"):
        fail(ValueError("--which must be final or best"), debug)
    with one_line_errors((*_KNOWN, KeyError), debug):
        result = summarize(run_dirs, which, ddof, allow_unfinished)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"normalized score ({which}), mean +- std (ddof={ddof}) over seeds")
    for col in ("run", "algorithm", "env", "seeds", "score"):
        table.add_column(col)
    for r in result["rows"]:
        name = r["name"] if r["finished"] else f"{r['name']} (unfinished)"
        table.add_row(name, r["algorithm"], r["env_id"], str(r["n"]), f"{r['mean']:.1f} +- {r['std']:.1f}")
    if "average" in result:
        a = result["average"]
        table.add_row("average (F.2)", "", "", str(len(a["seeds"])), f"{a['mean']:.1f} +- {a['std']:.1f}")
    Console().print(table)


def _sac_opt(name: str, *flags: str, **kwargs) -> typer.models.OptionInfo:
    """An option for the SACConfig setting ``name``: its default is the dataclass's (declared there only)."""
    from gta_rl.behaviour.config import default_of as sac_default

    default = sac_default(name)
    if isinstance(default, tuple):  # hidden widths
        default = ",".join(map(str, default))
    return typer.Option(default, *flags, **kwargs)


@app.command()
def sac(
    env: str = typer.Option(..., "--env", help="gymnasium env id, e.g. HalfCheetah-v5"),
    out: Path = typer.Option(..., "--out", help="run directory"),
    steps: int = _sac_opt("total_steps", "--steps", help="environment transitions"),
    num_envs: int = _sac_opt("num_envs", "--num-envs", help="env copies stepped together"),
    seed: int = _sac_opt("seed", "--seed"),
    hidden: str = _sac_opt("hidden", "--hidden", help="actor and critic widths"),
    batch_size: int = _sac_opt("batch_size", "--batch-size"),
    lr: float = _sac_opt("actor_lr", "--lr", help="actor, critic and temperature learning rate"),
    learning_starts: int = _sac_opt("learning_starts", "--learning-starts",
                                    help="uniform random steps before updates"),
    updates_per_step: float = _sac_opt("updates_per_step", "--updates-per-step",
                                       help="gradient updates per transition"),
    checkpoint_every: int = _sac_opt("checkpoint_every", "--checkpoint-every",
                                     help="steps between evaluated actor checkpoints"),
    eval_episodes: int = _sac_opt("eval_episodes", "--eval-episodes"),
    log_every: int = _sac_opt("log_every", "--log-every"),
    device: str = _sac_opt("device", "--device"),
    env_async: bool = _sac_opt("env_async", "--env-async", help="training envs in worker processes"),
    eval_async: bool = _sac_opt("eval_async", "--eval-async", help="evaluation envs in worker processes"),
    compile: bool = _sac_opt("compile", "--compile", help="torch.compile the update"),
    cuda_graph: bool = _sac_opt("cuda_graph", "--cuda-graph", help="capture the update in a CUDA graph"),
    state_every: int = _sac_opt("state_every", "--state-every",
                                help="steps between resumable-state saves (0: every checkpoint)"),
    transfer_every: int = _sac_opt("transfer_every", "--transfer-every",
                                   help="transitions copied to the device together (> 1: updates see them later)"),
    overlap: bool = _sac_opt("overlap", "--overlap",
                             help="step the envs while the GPU updates (acting one env step stale)"),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="stop (with a checkpoint) after this wall time"),  # noqa: UP045
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Online SAC (behaviour policies of D4RL-style datasets): evaluated actor checkpoints and the full
    replay buffer in --out."""
    from gta_data.progress import progress
    from gta_rl.behaviour import SACConfig, SACError, train_sac

    with one_line_errors(_KNOWN, debug):
        try:
            widths = tuple(int(w) for w in hidden.split(",") if w.strip())
        except ValueError:
            raise SACError(f"--hidden must list positive widths, got {hidden!r}") from None
        cfg = SACConfig(env_id=env, total_steps=steps, num_envs=num_envs, seed=seed, hidden=widths,
                        batch_size=batch_size, actor_lr=lr, critic_lr=lr, alpha_lr=lr,
                        learning_starts=learning_starts, updates_per_step=updates_per_step,
                        checkpoint_every=checkpoint_every, eval_episodes=eval_episodes, log_every=log_every,
                        device=device, env_async=env_async, eval_async=eval_async, compile=compile,
                        cuda_graph=cuda_graph, state_every=state_every, transfer_every=transfer_every,
                        overlap=overlap)
        deadline = time.time() + 60.0 * minutes if minutes else None
        with progress(f"SAC {env}", total=steps, unit="steps") as bar:
            result = train_sac(cfg, out, resume=resume, deadline=deadline,
                               progress=lambda done, total: bar.update(done))
    for c in result["checkpoints"]:
        typer.echo(f"step {c['step']}: eval return {c['eval_return']:.1f} +- {c['eval_return_std']:.1f}")


if __name__ == "__main__":  # python -m gta_rl.cli
    app()
