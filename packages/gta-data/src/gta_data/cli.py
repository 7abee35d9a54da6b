"""``gta-data``: make, import, export, inspect and validate trajectory stores."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="GTA trajectory stores: make, import, export, info, validate.")

_DEBUG = {"on": False}


@app.callback()
def main(debug: Annotated[bool, typer.Option(help="Show tracebacks instead of one-line errors.")] = False) -> None:
    """GTA trajectory stores (Zarr v3): make datasets locally, bridge to Minari, inspect and validate."""
    _DEBUG["on"] = debug


def _errors():
    """Known errors become one line on stderr and exit code 1 (tracebacks with --debug or GTA_DEBUG)."""
    from gta_data.cli_errors import one_line_errors
    from gta_data.errors import RecipeError, StoreError

    return one_line_errors((StoreError, RecipeError, FileExistsError, FileNotFoundError), _DEBUG["on"])


@contextmanager
def _progress(total: int | None, description: str):
    from gta_data.progress import progress

    with progress(description, total=total, unit="transitions", transient=True) as bar:
        yield bar.advance


@app.command()
def make(
    recipe: Annotated[str, typer.Argument(help="Recipe name (see `gta-data recipes`).")],
    out: Annotated[Path, typer.Option(help="Path of the store to create (e.g. data/umaze.zarr).")],
    size: Annotated[int | None, typer.Option(help="Number of transitions (recipe default if omitted).")] = None,
    seed: Annotated[int, typer.Option(help="Seed: the dataset is a deterministic function of it.")] = 0,
    env: Annotated[str | None, typer.Option(help="Environment id, for recipes that take one (random).")] = None,
    minari_id: Annotated[str | None, typer.Option(help="Also write a local Minari dataset with this id.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
    policy_file: Annotated[Path | None, typer.Option(
        help="Locomotion recipes: behaviour policy file (default <policy dir>/<env>.npz).")] = None,
    replay_file: Annotated[Path | None, typer.Option(
        help="medium-replay recipes: replay file (default <policy dir>/<env>-medium-replay.npz).")] = None,
) -> None:
    """Make a dataset with a recipe, as a store (and optionally a Minari dataset)."""
    from gta_data.errors import RecipeError
    from gta_data.recipes import list_recipes, make_dataset

    with _errors():
        recipes = list_recipes()
        total = size if size is not None else (recipes[recipe].default_size if recipe in recipes else None)
        if size is None and recipe.endswith("-medium-replay"):
            total = None  # the whole recorded replay: its length is known once the file is read
        options = {"env_id": env} if env else {}
        if policy_file is not None or replay_file is not None:
            if not recipe.startswith(("halfcheetah-", "hopper-", "walker2d-")):
                raise RecipeError(f"--policy-file and --replay-file are options of the locomotion recipes, not {recipe!r}")
            options.update(policy_file=policy_file, replay_file=replay_file)
        with _progress(total, f"make {recipe}") as advance:
            store = make_dataset(recipe, out, size=size, seed=seed, overwrite=overwrite, minari_id=minari_id,
                                 progress=advance, **options)
        typer.echo(f"wrote {store.path} ({store.num_transitions} transitions, {store.num_episodes} episodes)")
        if minari_id:
            typer.echo(f"wrote Minari dataset {minari_id}")


@app.command()
def recipes() -> None:
    """List the dataset recipes."""
    from gta_data.recipes import list_recipes

    for name, recipe in sorted(list_recipes().items()):
        typer.echo(f"{name:20s} {recipe.description} (default size {recipe.default_size:,})")


@app.command("import")
def import_(
    dataset_id: Annotated[str, typer.Argument(help="Minari dataset id, e.g. D4RL/pointmaze/umaze-v2.")],
    out: Annotated[Path, typer.Option(help="Path of the store to create.")],
    download: Annotated[bool, typer.Option(help="Download the dataset if it is not local (needs network).")] = False,
    obs_keys: Annotated[str | None, typer.Option(help="Comma-separated dict observation keys to flatten.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
) -> None:
    """Import a Minari dataset into a store."""
    from gta_data.minari_bridge import import_minari

    with _errors():
        keys = [k.strip() for k in obs_keys.split(",")] if obs_keys else None
        with _progress(None, f"import {dataset_id}") as advance:
            store = import_minari(dataset_id, out, download=download, obs_keys=keys, overwrite=overwrite,
                                  progress=advance)
        typer.echo(f"wrote {store.path} ({store.num_transitions} transitions, {store.num_episodes} episodes)")


@app.command()
def export(
    store: Annotated[Path, typer.Argument(help="Store to export.")],
    dataset_id: Annotated[str, typer.Option(help="Minari dataset id to create, e.g. gta/halfcheetah/aug-v0.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing Minari dataset of that id.")] = False,
) -> None:
    """Export a store as a local Minari dataset."""
    from gta_data.minari_bridge import export_minari

    with _errors():
        path = export_minari(store, dataset_id, overwrite=overwrite)
        typer.echo(f"wrote Minari dataset {dataset_id} at {path}")


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="Store to summarise.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarise a store: sizes, episodes, returns, reference scores, provenance."""
    from gta_data.summary import summarize

    with _errors():
        summary = summarize(store)
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=str(store), show_header=False)
        for key, value in summary.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            table.add_row(key, str(value))
        Console().print(table)


@app.command()
def validate(store: Annotated[Path, typer.Argument(help="Store to check (structure and every value).")]) -> None:
    """Fully validate a store; exit code 1 with a one-line reason if it is not valid."""
    from gta_data.store import TrajectoryStore

    with _errors():
        TrajectoryStore.open(store).validate()
        typer.echo(f"ok: {store}")


if __name__ == "__main__":  # python -m gta_data.cli
    app()
