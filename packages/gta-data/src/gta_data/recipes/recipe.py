"""What a dataset recipe is: a name, a default size and a function that streams its episodes. A module of its
own so that the recipes import it without importing the package's ``__init__``, which imports them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gta_data.store import Transitions


@dataclass(frozen=True)
class Recipe:
    """A named way to make a dataset: ``build(size, seed, options)`` streams its episodes and the store's metadata."""

    name: str
    description: str
    default_size: int
    # (size, seed, options) -> (episode iterator, store metadata)
    build: Callable[[int, int, dict[str, Any]], tuple[Iterator[Transitions], dict[str, Any]]]
    options: tuple[str, ...] = ()  # the option keys ``build`` reads (anything else is refused)
