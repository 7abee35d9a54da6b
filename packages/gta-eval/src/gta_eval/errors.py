"""Errors of gta-eval: one-line messages that the CLI prints without a traceback."""

from __future__ import annotations


class EvalError(ValueError):
    """A known problem with the user's input (stores, run directories, options)."""
