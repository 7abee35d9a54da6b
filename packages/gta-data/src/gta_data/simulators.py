"""The one place gta-data imports simulators and makes environments.

Recipes promise a dataset that is a function of its seed, so they depend on the simulator versions:
:func:`simulator_versions` reports gymnasium, mujoco and gymnasium-robotics for every store's
provenance. :func:`make_env` and :func:`register_robotics_envs` also keep the simulators quiet about
notices that concern none of our environments, each by its exact text (nothing else is hidden):

- gymnasium-robotics prints a notice about the AdroitHand reward versions to stderr on import;
- MuJoCo 4 reports that HalfCheetah's XML uses the deprecated ``settotalmass`` compiler attribute
  every time that env is made, and its default handler prints such warnings and appends them to
  ``MUJOCO_LOG.TXT`` in the working directory. We install a warning handler that turns every other
  MuJoCo warning into a Python :class:`MujocoWarning` (so no log file is written, and users can
  filter or raise them as usual).
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from importlib import metadata
from typing import Any

from gta_data.errors import RecipeError

# Notices dropped by their exact text: they concern environments and files that gta-data never uses.
_ROBOTICS_NOTICE = "AdroitHandRelocateDense-v1, AdroitHandHammerDense-v1, AdroitHandDoorDense-v1 environment's reward"
_MUJOCO_DEPRECATIONS = ("compiler attribute 'settotalmass' is deprecated",)

SIMULATOR_PACKAGES = ("gymnasium", "mujoco", "gymnasium-robotics")


class MujocoWarning(UserWarning):
    """A warning of the MuJoCo engine (its C warning handler), raised as a Python warning."""


def simulator_versions() -> dict[str, str | None]:
    """Installed versions of the simulator packages (None for one that is absent), for provenance."""
    versions: dict[str, str | None] = {}
    for name in SIMULATOR_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _mujoco_warning(message: str) -> None:
    if message.startswith(_MUJOCO_DEPRECATIONS):
        return
    try:
        warnings.warn(message, MujocoWarning, stacklevel=2)
    except Exception:  # warnings made errors: an exception must not cross MuJoCo's C code (it aborts)
        sys.stderr.write(f"MuJoCo warning: {message}\n")


def quiet_mujoco() -> None:
    """Route MuJoCo's warnings through Python's ``warnings`` (none printed by the engine, no
    ``MUJOCO_LOG.TXT``), dropping the known deprecations of gymnasium's own model files. A handler
    that someone else installed is kept."""
    try:
        import mujoco
    except ImportError:
        return
    current = mujoco.get_mju_user_warning()
    if current is None:
        mujoco.set_mju_user_warning(_mujoco_warning)


def register_robotics_envs() -> None:
    """Register gymnasium-robotics environments (PointMaze, AntMaze, ...) when the package is present;
    its AdroitHand notice is dropped, anything else it prints to stderr on import is passed on."""
    try:
        import gymnasium as gym
    except ImportError:
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            import gymnasium_robotics
    except ImportError:
        return
    finally:
        rest = [line for line in captured.getvalue().splitlines(keepends=True)
                if not line.startswith(_ROBOTICS_NOTICE)]
        sys.stderr.write("".join(rest))
    gym.register_envs(gymnasium_robotics)


def make_env(env_id: Any, **kwargs: Any):
    """``gymnasium.make(env_id, **kwargs)`` (an id or an ``EnvSpec``) with gymnasium-robotics registered and MuJoCo quiet; a
    :class:`RecipeError` if gymnasium is missing or the env cannot be made."""
    try:
        import gymnasium as gym
    except ImportError:
        raise RecipeError("recipes need the extra: pip install 'gta-data[recipes]'") from None
    quiet_mujoco()
    register_robotics_envs()
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise RecipeError(f"cannot make environment {getattr(env_id, 'id', env_id)!r}: {exc}") from None
