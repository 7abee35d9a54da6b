"""Errors of gta-diffusion: one-line messages that the CLI prints without a traceback."""


class DiffusionError(ValueError):
    """Bad input or state (wrong store for a model, bad hyperparameter, broken run directory)."""
