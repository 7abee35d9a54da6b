"""gta-diffusion: GTA conditional trajectory diffusion (EDM, MLP-Mixer temporal U-Net, classifier-free
guidance), training and augmentation (GTA Sec. 4), plus the SynthER baseline network.

The Python API, for a notebook as for a script (names load their module on first use; torch loads then)::

    from gta_diffusion import AugmentConfig, TrainConfig, augment, train
    train("hopper.zarr", "runs/hopper", TrainConfig(steps=100_000))               # a run directory
    augment("runs/hopper", "hopper.zarr", "hopper-gta.zarr", AugmentConfig(mu=0.25, guidance_weight=2.0))

``Trainer``, ``Augmenter`` and ``load_model`` are the pieces these two are made of. The modules are
``gta_diffusion.training`` and ``gta_diffusion.augmentation``.
"""

from gta_data.lazy import lazy_attributes
from gta_diffusion._version import __version__

_API = {  # public name -> its module
    "train": "training", "Trainer": "training", "load_model": "training", "TrainConfig": "config",
    "augment": "augmentation", "Augmenter": "augmentation", "AugmentConfig": "config",
    "WindowConfig": "config", "EDMConfig": "edm",
}
__all__ = ["__version__", *_API]

__getattr__, __dir__ = lazy_attributes(__name__, _API)
