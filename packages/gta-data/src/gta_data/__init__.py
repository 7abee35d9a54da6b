"""gta-data: the trajectory store shared by the GTA packages, the Minari bridge, dataset recipes and
D4RL reference scores."""

from gta_data._version import __version__
from gta_data.errors import RecipeError, StoreError
from gta_data.scores import normalized_score, reference_scores
from gta_data.store import (
    FORMAT_VERSION,
    StoreWriter,
    TrajectoryStore,
    Transitions,
    append_episodes,
    check_replaceable,
    open_store,
    write_episodes,
    write_store,
)
from gta_data.windows import WindowBatch, gather_windows, window_starts

__all__ = [
    "__version__",
    "FORMAT_VERSION",
    "RecipeError",
    "StoreError",
    "StoreWriter",
    "TrajectoryStore",
    "Transitions",
    "WindowBatch",
    "append_episodes",
    "gather_windows",
    "normalized_score",
    "open_store",
    "reference_scores",
    "window_starts",
    "write_episodes",
    "write_store",
    "check_replaceable",
]
