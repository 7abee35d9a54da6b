"""Command line interface of gta-diffusion."""

import typer

app = typer.Typer(no_args_is_help=True, help="GTA conditional trajectory diffusion (EDM, MLP-Mixer temporal U-Net, classifier-free guidance), training and augmentation, plus the S4RL and SynthER baselines.")


@app.callback()
def main() -> None:
    """GTA conditional trajectory diffusion (EDM, MLP-Mixer temporal U-Net, classifier-free guidance), training and augmentation, plus the S4RL and SynthER baselines."""


@app.command()
def version() -> None:
    """Print the package version."""
    from gta_diffusion import __version__

    typer.echo(__version__)
