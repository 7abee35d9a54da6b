"""Command line interface of gta-eval: data quality reports (GTA 5.4, D, F.4-F.7) and result tables
(Tables 1-2, F.2, Table 20, Table 29)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Data-quality metrics (oracle reward, dynamic MSE, novelty), statistics, reports and plots for GTA.",
)
_state = {"debug": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for known errors.")) -> None:
    """Data-quality metrics (oracle reward, dynamic MSE, novelty), statistics, reports and plots for GTA."""
    _state["debug"] = debug


def _fail(exc: Exception) -> None:
    from gta_data.cli_errors import fail

    fail(exc, _state["debug"])


def _known_errors():
    from gta_data import StoreError
    from gta_eval.errors import EvalError

    return (EvalError, StoreError)


@app.command()
def version() -> None:
    """Print the package version."""
    from gta_eval._version import __version__

    typer.echo(__version__)


@app.command()
def quality(
    original: Path = typer.Option(..., "--original", help="Original store (.zarr)."),
    augmented: Path = typer.Option(..., "--augmented", help="Augmented store of the same env (.zarr)."),
    out: Path = typer.Option(..., "--out", help="Report directory to create."),
    samples: int = typer.Option(1_000_000, "--samples", help="Transitions sampled from the augmented store (paper: 1M)."),
    segments: int = typer.Option(2000, "--segments", help="Whole segments stepped for the reward-sum plots (F.7)."),
    workers: int = typer.Option(0, "--workers", help="Oracle processes (0: all CPU cores)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="Nearest-neighbour device: auto, cpu, cuda."),
    env_kwargs: str = typer.Option("", "--env-kwargs", help='JSON kwargs for gym.make, e.g. \'{"continuing_task": true}\'.'),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Dynamic MSE, oracle reward and novelty of an augmented store against its original (GTA 5.4, D)."""
    import os

    from rich.progress import Progress

    from gta_eval import plots, report
    from gta_eval.quality import evaluate_quality

    try:
        kwargs = json.loads(env_kwargs) if env_kwargs else {}
        if not isinstance(kwargs, dict):
            raise ValueError
    except ValueError:
        _fail(_known_errors()[0](f"--env-kwargs is not a JSON object: {env_kwargs!r}"))
    try:
        with report.report_dir(out, overwrite=overwrite) as tmp, Progress(transient=True) as bar:
            tasks: dict[str, int] = {}

            def progress(stage: str, k: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.advance(tasks[stage], k)

            res = evaluate_quality(
                str(original), str(augmented), samples=samples, segments=segments,
                workers=workers or os.cpu_count() or 1, seed=seed, device=device, env_kwargs=kwargs,
                progress=progress,
            )
            m = res.metrics
            makers = {
                "quality.png": lambda p: plots.quality_chart(
                    {Path(m["augmented"]).name: m}, p,
                    title=f"{m['env_id']}: {Path(m['augmented']).name} against {Path(m['original']).name}"),
            }
            if res.reward_sums:
                makers["reward_sums.png"] = lambda p: plots.reward_histograms(res.reward_sums, p, title=m["env_id"])
            if res.condition is not None:
                r = m["condition_correlation"]["pearson_r"]
                makers["condition.png"] = lambda p: plots.condition_scatter(res.condition, res.generated_return, r, p)
            images = report.render_images(tmp, makers)
            report.write_json(tmp / "quality.json", m)
            (tmp / "README.md").write_text(report.quality_markdown(m, images))
    except _known_errors() as exc:
        _fail(exc)
    for warning in m.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    clipped = m["with_clipped_states"]
    typer.echo(f"dynamic MSE {m['dynamic_mse']:.4g}  oracle reward {m['oracle_reward']:.4g}  generated reward "
               f"{m['generated_reward']:.4g}  novelty(s,a) {m['novelty_state_action']:.4g}  over "
               f"{m['exact_samples']}/{m['samples']} sampled transitions with exactly known states"
               + (f" (with clipped states: dynamic MSE {clipped['dynamic_mse']:.4g}, oracle reward "
                  f"{clipped['oracle_reward']:.4g})" if clipped["samples"] > m["exact_samples"] else ""))
    typer.echo(f"report written to {out}")


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="gta-rl run directories, directories of them, or per-seed CSV/JSON files."),
    out: Path = typer.Option(..., "--out", help="Report directory to create."),
    baseline: str = typer.Option(None, "--baseline", help="Method the t-tests compare against (default: 'none' or the first)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    allow_unfinished: bool = typer.Option(False, "--allow-unfinished",
                                          help="Include gta-rl runs stopped before their last step (their last "
                                          "evaluation counts as final)."),
) -> None:
    """Score tables (mean ± std, F.2 average), Welch's t-tests, learning curves and the mu x alpha heat map."""
    from gta_eval import plots, report, stats

    try:
        results = stats.load_results(runs, allow_unfinished)
        table = stats.score_table(results)
        tests = stats.compare_methods(results, baseline)
        grids = stats.sensitivity_grid(results)
        with report.report_dir(out, overwrite=overwrite) as tmp:
            makers = {}
            curves: dict[str, dict[str, list]] = {}
            for r in results:
                if r.curves:
                    label = f"{r.algorithm}/{r.method}" + (f" mu={r.mu:g} a={r.alpha:g}" if r.mu is not None and r.alpha is not None else "")
                    curves.setdefault(r.task, {})[label] = list(r.curves.values())
            if curves:
                makers["learning_curves.png"] = lambda p: plots.learning_curves(curves, p)
            for i, ((task, algo, method), (mus, alphas, grid)) in enumerate(grids.items()):
                makers[f"sensitivity_{i}.png"] = (
                    lambda p, a=(mus, alphas, grid), t=f"{task} {algo}/{method}": plots.sensitivity_heatmap(*a, p, title=t))
            images = report.render_images(tmp, makers)
            table_md = table.to_markdown()
            (tmp / "scores.csv").write_text(table.to_csv())
            (tmp / "scores.md").write_text(table_md)
            report.write_json(tmp / "results.json", {
                "std": "sample standard deviation (ddof=1) over seeds",
                "runs": [{"task": r.task, "method": r.method, "algorithm": r.algorithm, "mu": r.mu, "alpha": r.alpha,
                          "scores": r.scores, "source": r.source} for r in results],
                "table": [{"algorithm": a, "method": m, "task": t, "mean": v[0], "std": v[1], "seeds": v[2]}
                          for (a, m, t), v in sorted(table.cells.items())],
                "average": [{"algorithm": a, "method": m, "mean": v[0], "std": v[1], "seeds": v[2]}
                            for (a, m), v in sorted(table.average.items())],
                "welch": tests,
                "sensitivity": [{"task": t, "algorithm": a, "method": m, "mu": mu, "alpha": al, "grid": g.tolist()}
                                for (t, a, m), (mu, al, g) in grids.items()],
                "sweeps_left_out": [{"task": t, "method": m, "algorithm": a, "settings": n}
                                    for t, m, a, n in table.sweeps],
            })
            (tmp / "README.md").write_text(report.compare_markdown(table_md, tests, images, len(results),
                                                                   table.sweeps))
    except _known_errors() as exc:
        _fail(exc)
    typer.echo(table_md, nl=False)
    if table.sweeps:
        typer.echo(report.sweep_note(table.sweeps))
    typer.echo(f"report written to {out}")


@app.command()
def chart(
    reports: list[Path] = typer.Argument(..., help="quality.json files (or report directories) of several methods."),
    out: Path = typer.Option(..., "--out", help="PNG to write (.png)."),
    labels: str = typer.Option("", "--labels", help="Comma-separated names (default: augmented store names)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing PNG."),
) -> None:
    """Figure 5 equivalent: one panel per quality metric, a bar per method."""
    from gta_eval import plots
    from gta_eval.errors import EvalError

    try:
        names = [s for s in labels.split(",") if s] if labels else []
        if names and len(names) != len(reports):
            raise EvalError(f"{len(names)} labels for {len(reports)} reports")
        metrics = {}
        for i, p in enumerate(reports):
            p = p / "quality.json" if p.is_dir() else p
            if not p.is_file():
                raise EvalError(f"{p} does not exist")
            try:
                m = json.loads(p.read_text())
            except json.JSONDecodeError:
                raise EvalError(f"{p} is not valid JSON") from None
            if "dynamic_mse" not in m:
                raise EvalError(f"{p} is not a gta-eval quality report")
            metrics[names[i] if names else Path(m["augmented"]).stem] = m
        if out.suffix.lower() != ".png":
            raise EvalError(f"--out {out} must name a .png file")
        if out.exists() and (not overwrite or not out.is_file()):
            raise EvalError(f"{out} already exists" + (" (pass --overwrite to replace it)" if out.is_file() else ""))
        if not out.parent.exists():
            raise EvalError(f"parent directory {out.parent} does not exist")
        tmp = out.parent / f".{out.stem}.tmp-{os.getpid()}.png"  # never a half-written PNG at --out
        try:
            plots.quality_chart(metrics, tmp)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    except _known_errors() as exc:
        _fail(exc)
    typer.echo(f"chart written to {out}")


if __name__ == "__main__":  # python -m gta_eval.cli
    app()
