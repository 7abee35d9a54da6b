"""gta-rl: Offline RL on trajectory stores: TD3+BC, IQL, CQL, MCQ and Decision Transformer, many seeds at once, with gymnasium evaluation."""

__version__ = "0.1.0"
