"""Command line interface of gta-eval."""

import typer

app = typer.Typer(no_args_is_help=True, help="Data-quality metrics (oracle reward, dynamic MSE, novelty), statistics, reports and plots for GTA.")


@app.callback()
def main() -> None:
    """Data-quality metrics (oracle reward, dynamic MSE, novelty), statistics, reports and plots for GTA."""


@app.command()
def version() -> None:
    """Print the package version."""
    from gta_eval import __version__

    typer.echo(__version__)
