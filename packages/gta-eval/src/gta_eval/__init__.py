"""gta-eval: Data-quality metrics (oracle reward, dynamic MSE, novelty), statistics, reports and plots for GTA."""

from gta_eval._version import __version__

__all__ = ["__version__"]
