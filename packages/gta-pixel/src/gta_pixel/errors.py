"""Errors of gta-pixel. Every message is one line that names the problem (the CLI prints it as is)."""


class PixelError(ValueError):
    """Base class of gta-pixel's errors."""


class TaskError(PixelError):
    """A pixel task cannot be made or used (unknown kind, missing simulator or renderer, bad action)."""


class PixelStoreError(PixelError):
    """A pixel store (or the data given to write one) is malformed, incomplete or inconsistent."""


class VD4RLError(PixelError):
    """V-D4RL files cannot be read (missing keys, inconsistent lengths, broken episode structure)."""


class GenerateError(PixelError):
    """A dataset cannot be generated as asked (unknown quality, missing behaviour policy file)."""


class RunError(PixelError):
    """A DrQ+BC run directory, checkpoint or latent store cannot be used as asked (pretrain, encode, finetune,
    evaluate)."""
