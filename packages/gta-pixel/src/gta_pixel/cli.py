"""Command line interface of gta-pixel: each stage reads and writes stores, so users compose them."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="GTA pixel pipeline: DrQ+BC encoder pretraining, latent projection and latent-space augmentation.")

_DEBUG = {"on": False}


@app.callback()
def main(debug: Annotated[bool, typer.Option(help="Show tracebacks instead of one-line errors.")] = False) -> None:
    """GTA pixel pipeline: DrQ+BC encoder pretraining, latent projection and latent-space augmentation."""
    _DEBUG["on"] = debug or bool(os.environ.get("GTA_DEBUG"))


@contextmanager
def _errors():
    """Known errors become one line on stderr and exit code 1 (tracebacks with --debug)."""
    from gta_data.errors import RecipeError, StoreError
    from gta_data.policies import PolicyError
    from gta_pixel.errors import PixelError

    try:
        yield
    except (PixelError, StoreError, RecipeError, PolicyError, FileExistsError, FileNotFoundError) as exc:
        if _DEBUG["on"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@contextmanager
def _progress(total: int | None, description: str, unit: str = "steps"):
    from gta_data.progress import progress

    with progress(description, total=total, unit=unit, transient=True) as bar:
        yield bar.advance


@app.command()
def version() -> None:
    """Print the package version."""
    from gta_pixel._version import __version__

    typer.echo(__version__)


@app.command()
def make(
    task: Annotated[str, typer.Argument(help="walker_walk (dm_control suite), gym:Walker2d-v5 or fake.")],
    quality: Annotated[str, typer.Argument(help="random, medium, expert, medium-expert or medium-replay.")],
    out: Annotated[Path, typer.Option(help="Path of the pixel store to create (e.g. walker_medium.zarr).")],
    episodes: Annotated[int | None, typer.Option(
        help="Number of episodes (500 agent steps each for dm_control); default 10, medium-replay: the whole replay.",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Episode i uses env seed seed + i and noise stream [seed, i] "
                                           "(medium-replay: unused).")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes, each with its own renderer (same data for any).")] = 1,
    size: Annotated[int, typer.Option(help="Frame height and width in pixels.")] = 84,
    frame_stack: Annotated[int, typer.Option(help="Frames per observation recorded for the agents.")] = 3,
    policy_file: Annotated[Path | None, typer.Option(
        help="Behaviour policy file (default: <pixel policy dir>/<domain>_<task>.npz, gta-data's for gym tasks).")] = None,
    replay_file: Annotated[Path | None, typer.Option(
        help="medium-replay: replay file (default: beside the policy file, <name>-medium-replay.npz).")] = None,
    states: Annotated[bool, typer.Option(help="Also store the proprioceptive state of every frame.")] = True,
    gl: Annotated[str | None, typer.Option(help="MuJoCo OpenGL backend (MUJOCO_GL): egl or osmesa; default egl.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing pixel store.")] = False,
) -> None:
    """Generate a V-D4RL-style pixel dataset with behaviour rollouts (see gta_pixel.generate)."""
    from gta_pixel.generate import make_dataset
    from gta_pixel.tasks import parse_task

    with _errors():
        if gl is not None:
            os.environ["MUJOCO_GL"] = gl
        else:
            os.environ.setdefault("MUJOCO_GL", "egl")
        spec = parse_task(task, size=size)
        if episodes is None and quality != "medium-replay":
            episodes = 10
        total = (None if spec["kind"] == "gym" or episodes is None
                 else episodes * (spec.get("max_steps") or 500))
        with _progress(total, f"make {task} {quality}") as advance:
            store = make_dataset(spec, quality, out, episodes=episodes, seed=seed, workers=workers,
                                 policy_file=policy_file, replay_file=replay_file, frame_stack=frame_stack,
                                 states=states, overwrite=overwrite, progress=advance)
        returns = store.episode_returns()
        typer.echo(f"wrote {store.path} ({store.num_steps} steps, {store.num_episodes} episodes, return "
                   f"{returns.mean():.1f} +- {returns.std():.1f})")
        check = store.provenance.get("replay_check")
        if check:
            typer.echo(f"re-simulation against the recorded run: max return error {check['max_return_error']:.3g}, "
                       f"max last-observation error {check['max_last_obs_error']:.3g}, "
                       f"{check['ending_mismatches']} episode endings differ")


@app.command("import-vd4rl")
def import_vd4rl_cmd(
    directory: Annotated[Path, typer.Argument(help="A V-D4RL directory of 84px *.hdf5 shards or 64px *.npz episodes.")],
    out: Annotated[Path, typer.Argument(help="Path of the pixel store to create.")],
    task: Annotated[str | None, typer.Option(help="Suite task, e.g. walker_walk (default: from the path).")] = None,
    size: Annotated[int | None, typer.Option(help="npz episodes: resize frames to this size (default 84).")] = None,
    states: Annotated[bool, typer.Option(help="npz episodes: keep the proprioceptive state keys.")] = False,
    join_shards: Annotated[bool, typer.Option(help="hdf5 shards: continue episodes across shards (default: "
                                              "each shard on its own, as V-D4RL's loader).")] = False,
    frame_stack: Annotated[int, typer.Option(help="Frames per observation recorded for the agents.")] = 3,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing pixel store.")] = False,
) -> None:
    """Import V-D4RL's files into a pixel store (actions and rewards moved to our row convention)."""
    from gta_pixel.vd4rl import import_vd4rl

    with _errors():
        with _progress(None, f"import {directory}") as advance:
            store = import_vd4rl(directory, out, task=task, size=size, states=states, frame_stack=frame_stack,
                                 join_shards=join_shards, overwrite=overwrite, progress=advance)
        read = store.provenance.get("read", {})
        extra = "".join(f", {read[k]} {k.replace('_', ' ')}" for k in ("fragments", "cut", "dropped_rows",
                                                                        "skipped_rows") if read.get(k))
        typer.echo(f"wrote {store.path} ({store.num_steps} steps, {store.num_episodes} episodes{extra})")


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="A pixel store.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the attributes as JSON.")] = False,
) -> None:
    """Summarise a pixel store (structure checked; values are checked by reading, see `validate`)."""
    from gta_pixel.pixelstore import PixelStore

    with _errors():
        s = PixelStore.open(store)
        if as_json:
            typer.echo(json.dumps(s.attrs, indent=2, sort_keys=True))
            return
        returns = s.episode_returns()
        typer.echo(f"{s.path}: task {json.dumps(s.task)}")
        typer.echo(f"  {s.num_steps} steps, {s.num_episodes} episodes, {s.num_frames} frames of {s.frame_shape}, "
                   f"frame stack {s.frame_stack}, act_dim {s.act_dim}, state_dim {s.state_dim}")
        typer.echo(f"  episode return {returns.mean():.2f} +- {returns.std():.2f} (min {returns.min():.2f}, "
                   f"max {returns.max():.2f})")
        renderer = s.renderer
        if renderer:
            typer.echo(f"  renderer {json.dumps(renderer, sort_keys=True)}")


@app.command()
def validate(store: Annotated[Path, typer.Argument(help="A pixel store.")]) -> None:
    """Read every array of a pixel store and check every invariant of the format."""
    from gta_pixel.pixelstore import PixelStore

    with _errors():
        s = PixelStore.open(store).validate()
        typer.echo(f"ok: {s.path} ({s.num_steps} steps, {s.num_episodes} episodes)")


# The DrQ+BC stages (pretrain, encode, finetune, evaluate, bench) live in their own module.
from gta_pixel.cli_model import register_model_commands  # noqa: E402

register_model_commands(app, debug=lambda: _DEBUG["on"])


if __name__ == "__main__":  # python -m gta_pixel.cli
    app()
