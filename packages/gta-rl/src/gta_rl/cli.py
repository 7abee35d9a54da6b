"""Command line interface of gta-rl."""

import typer

app = typer.Typer(no_args_is_help=True, help="Offline RL on trajectory stores: TD3+BC, IQL, CQL, MCQ and Decision Transformer, many seeds at once, with gymnasium evaluation.")


@app.callback()
def main() -> None:
    """Offline RL on trajectory stores: TD3+BC, IQL, CQL, MCQ and Decision Transformer, many seeds at once, with gymnasium evaluation."""


@app.command()
def version() -> None:
    """Print the package version."""
    from gta_rl import __version__

    typer.echo(__version__)
