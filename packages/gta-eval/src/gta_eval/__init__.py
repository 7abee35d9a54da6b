"""gta-eval: Data-quality metrics (oracle reward, dynamic MSE, novelty), statistics, reports and plots for GTA.

The Python API (names load their module on first use)::

    from gta_eval import compare_methods, evaluate_quality, load_results, score_table
    quality = evaluate_quality("hopper.zarr", "hopper-gta.zarr", samples=10_000).metrics   # GTA 5.4, D
    results = load_results(["runs/td3bc-none", "runs/td3bc-gta"])                         # run directories
    table, tests = score_table(results), compare_methods(results)                          # Tables 1-2, Welch t-tests
"""

from gta_data.lazy import lazy_attributes
from gta_eval._version import __version__

_API = {  # public name -> its module
    "evaluate_quality": "quality", "QualityResult": "quality",
    "load_results": "stats", "read_run_dir": "stats", "score_table": "stats", "compare_methods": "stats",
    "welch_t_test": "stats",
}
__all__ = ["__version__", *_API]

__getattr__, __dir__ = lazy_attributes(__name__, _API)
