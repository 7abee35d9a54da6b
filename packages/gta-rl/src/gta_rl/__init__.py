"""gta-rl: Offline RL on trajectory stores: TD3+BC, IQL, CQL, MCQ and Decision Transformer, many seeds at once,
with gymnasium evaluation.

The Python API, for notebooks and scripts::

    from gta_rl import RunConfig, train
    results = train(RunConfig("td3bc", data=["halfcheetah-medium"], seeds="0-7"), "runs/halfcheetah")

``train_arms`` trains runs that differ only in their data as one stack, ``load_run`` restores a run's agent,
``ResolvedRun`` is a run directory's ``config.json``.
"""

from gta_data.lazy import lazy_attributes
from gta_rl._version import __version__

# public name -> its module, loaded on first use so that ``import gta_rl`` stays light
_API = {"RunConfig": "config", "ResolvedRun": "config", "train": "training", "train_arms": "training",
        "load_run": "run_dir"}
__all__ = ["__version__", *_API]
__getattr__, __dir__ = lazy_attributes(__name__, _API)
