"""Package attributes that import their module on first use (PEP 562), so that ``import gta_x`` stays light.

A package's ``__init__`` names its public API and the module each name lives in; the torch-heavy modules load
when a name is first used, not when the package is imported (the command lines import only what a command
needs, and ``import gta_data`` never imports torch)::

    __getattr__, __dir__ = lazy_attributes(__name__, {"train": "training", "TrainConfig": "training"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, api: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``api`` maps a public name to the submodule (relative
    to the package) that defines it. A loaded name is cached in the package, so later uses are plain lookups."""
    api = dict(api)

    def __getattr__(name: str) -> Any:
        if name not in api:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{api[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(api))

    return __getattr__, __dir__
