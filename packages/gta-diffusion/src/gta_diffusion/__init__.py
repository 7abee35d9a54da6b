"""gta-diffusion: GTA conditional trajectory diffusion (EDM, MLP-Mixer temporal U-Net, classifier-free
guidance), training and augmentation (GTA Sec. 4), plus the SynthER baseline network.

``from gta_diffusion import Trainer, TrainConfig, AugmentConfig, Augmenter, load_model`` (imported on first use:
torch loads then). ``augment`` stays the module (``from gta_diffusion.augment import augment`` is the function): a
package attribute of the same name would hide the module from ``import gta_diffusion.augment as m``.
"""

from gta_data.lazy import lazy_attributes
from gta_diffusion._version import __version__

_API = {"AugmentConfig": "augment", "Augmenter": "augment", "TrainConfig": "train", "Trainer": "train",
        "load_model": "train"}  # public name -> its module
__all__ = ["__version__", *_API]


__getattr__, __dir__ = lazy_attributes(__name__, _API)  # the API's modules load on first use (torch then)
