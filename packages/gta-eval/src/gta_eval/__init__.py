"""gta-eval: Data-quality metrics (oracle reward, dynamic MSE, novelty), statistics, reports and plots for GTA."""

import importlib

from gta_eval._version import __version__

_API = {"evaluate_quality": "quality", "load_results": "stats", "read_run_dir": "stats"}  # public name -> its module
__all__ = ["__version__", *_API]


def __getattr__(name: str):  # PEP 562: the API's modules load on first use; ``import gta_eval`` stays light
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
