"""gta-eval: Data-quality metrics (oracle reward, dynamic MSE, novelty), statistics, reports and plots for GTA."""

__version__ = "0.1.0"
