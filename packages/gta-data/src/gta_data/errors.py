"""Errors of gta-data. Every message is one line that names the problem (CLIs print it as is)."""


class StoreError(ValueError):
    """A store (or the data given to write one) is malformed, incomplete or inconsistent."""


class RecipeError(ValueError):
    """A dataset recipe was asked for something it cannot make."""
