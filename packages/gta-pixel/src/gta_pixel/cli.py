"""Command line interface of gta-pixel."""

import typer

app = typer.Typer(no_args_is_help=True, help="GTA pixel pipeline: DrQ+BC encoder pretraining, latent projection and latent-space augmentation.")


@app.callback()
def main() -> None:
    """GTA pixel pipeline: DrQ+BC encoder pretraining, latent projection and latent-space augmentation."""


@app.command()
def version() -> None:
    """Print the package version."""
    from gta_pixel._version import __version__

    typer.echo(__version__)


# The DrQ+BC stages (pretrain, encode, finetune, evaluate, bench) live in their own module.
from gta_pixel.cli_model import register_model_commands  # noqa: E402

register_model_commands(app)
