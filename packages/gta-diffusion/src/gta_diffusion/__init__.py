"""gta-diffusion: GTA conditional trajectory diffusion (EDM, MLP-Mixer temporal U-Net, classifier-free
guidance), training and augmentation (GTA Sec. 4), plus the SynthER baseline network.

``from gta_diffusion import Trainer, TrainConfig, AugmentConfig, Augmenter, load_model`` (imported on first use:
torch loads then). ``augment`` stays the module (``from gta_diffusion.augment import augment`` is the function): a
package attribute of the same name would hide the module from ``import gta_diffusion.augment as m``.
"""

import importlib

from gta_diffusion._version import __version__

_API = {"AugmentConfig": "augment", "Augmenter": "augment", "TrainConfig": "train", "Trainer": "train",
        "load_model": "train"}  # public name -> its module
__all__ = ["__version__", *_API]


def __getattr__(name: str):  # PEP 562: the API's modules load on first use; ``import gta_diffusion`` stays light
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
