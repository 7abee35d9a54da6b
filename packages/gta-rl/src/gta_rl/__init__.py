"""gta-rl: Offline RL on trajectory stores: TD3+BC, IQL, CQL, MCQ and Decision Transformer, many seeds at once,
with gymnasium evaluation.

``from gta_rl import RunConfig, train_arms, load_run``; ``train`` stays the module (``from gta_rl.train import
train`` is the function): a package attribute of the same name would hide the module from ``import gta_rl.train
as m``.
"""

import importlib

from gta_rl._version import __version__

_API = {"RunConfig": "train", "train_arms": "train", "load_run": "train"}  # public name -> its module
__all__ = ["__version__", *_API]


def __getattr__(name: str):  # PEP 562: the API's modules load on first use; ``import gta_rl`` stays light
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
