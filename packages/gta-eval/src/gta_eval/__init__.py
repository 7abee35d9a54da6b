"""gta-eval: Data-quality metrics (oracle reward, dynamic MSE, novelty), statistics, reports and plots for GTA."""

from gta_data.lazy import lazy_attributes
from gta_eval._version import __version__

_API = {"evaluate_quality": "quality", "load_results": "stats", "read_run_dir": "stats"}  # public name -> its module
__all__ = ["__version__", *_API]


__getattr__, __dir__ = lazy_attributes(__name__, _API)  # the API's modules load on first use
