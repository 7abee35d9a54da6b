"""gta-rl: Offline RL on trajectory stores: TD3+BC, IQL, CQL, MCQ and Decision Transformer, many seeds at once, with gymnasium evaluation."""

from gta_rl._version import __version__

__all__ = ["__version__"]
