"""Pixel tasks: one small interface over the simulators that render the pixel datasets.

Every task is a :class:`PixelTask`: ``reset(seed) -> (state, frame)`` and ``step(action) -> (state, frame,
reward, terminated, truncated)``, with ``frame`` one uint8 image [3, H, W] (channels first, as DrQ+BC reads
them) and ``state`` the simulator's flat float32 proprioceptive observation (what state-based behaviour
policies act on). Actions are float32 in [-1, 1] for every task and are scaled to the simulator's action
bounds. ``spec`` is a JSON-able dict that :func:`make_task` turns back into the same task, so a pixel store
records which task made it and evaluation can rebuild it.

Three kinds:

- ``dmc``: :class:`DmcTask`, a dm_control suite task as V-D4RL's ``drqbc/dmc.py`` makes it: ``suite.load(domain,
  task, task_kwargs={"random": seed}, visualize_reward=False)``, actions cast to float32 and scaled from
  [-1, 1] to the action spec, each action repeated ``action_repeat`` times (rewards summed until the episode
  ends, as its ``ActionRepeatWrapper``), a ``size`` x ``size`` render of camera ``camera`` (quadruped: 2)
  after each agent step. The suite's locomotion tasks run 1000 control steps, i.e. 500 agent steps at the
  V-D4RL repeat of 2, with returns in [0, 1000]. ``reset(seed)`` reseeds the task's random state exactly as
  ``task_kwargs={"random": seed}`` seeds a freshly loaded environment, so episode ``seed`` is the first
  episode of V-D4RL's environment made with that seed. dm_control is the optional extra ``dmc``.
- ``gym``: :class:`GymTask`, a gymnasium MuJoCo environment rendered offscreen (``render_mode="rgb_array"``,
  ``camera_id`` 0 frames the body of the locomotion tasks), optional action repeat.
- ``fake``: :class:`FakeTask`, deterministic synthetic images of a tiny linear system; no simulator, no
  renderer, microseconds per step: what unit tests use.

Rendering goes through MuJoCo's OpenGL backends, chosen by ``MUJOCO_GL`` before the first task is made in a
process: ``egl`` (a GPU, or Mesa's llvmpipe on a CPU; the default here, since the pipeline runs headless) or
``osmesa``.
"""

from __future__ import annotations

import math
import os
import sys
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gta_pixel.errors import TaskError

KINDS = ("dmc", "gym", "fake")
# V-D4RL zooms in on the quadruped with camera 2 (drqbc/dmc.py); every other suite domain uses camera 0.
_DMC_CAMERA = {"quadruped": 2}
_DMC_DOMAIN_ALIAS = {"cup": "ball_in_cup"}


@runtime_checkable
class PixelTask(Protocol):
    """What every pixel task offers (see the module docstring)."""

    act_dim: int
    state_dim: int
    frame_shape: tuple[int, int, int]  # (3, H, W)
    max_steps: int  # agent steps of a full episode (a time limit truncates there)
    spec: dict[str, Any]

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool, bool]: ...

    def renderer(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def make_task(spec: dict[str, Any]) -> PixelTask:
    """The task a ``spec`` (a task's ``spec`` attribute, e.g. read back from a pixel store) describes."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise TaskError(f"a task spec is a dict with a 'kind' ({', '.join(KINDS)}), got {spec!r}")
    kind = spec["kind"]
    args = {k: v for k, v in spec.items() if k != "kind"}
    builders = {"dmc": DmcTask, "gym": GymTask, "fake": FakeTask}
    if kind not in builders:
        raise TaskError(f"unknown task kind {kind!r} (known: {', '.join(KINDS)})")
    try:
        return builders[kind](**args)
    except TypeError as exc:
        raise TaskError(f"bad {kind} task spec {spec!r}: {exc}") from None


def parse_task(name: str, size: int = 84) -> dict[str, Any]:
    """A task spec from a short name: ``walker_walk`` (dm_control suite, V-D4RL's settings),
    ``gym:Walker2d-v5`` (gymnasium, camera 0, no repeat) or ``fake`` (the synthetic task)."""
    if name == "fake" or name.startswith("fake:"):
        return FakeTask(size=size if name == "fake" else int(name.split(":", 1)[1])).spec
    if name.startswith("gym:"):
        return {"kind": "gym", "env_id": name[4:], "camera_id": 0, "size": size, "action_repeat": 1}
    if "_" not in name:
        raise TaskError(f"task {name!r}: use domain_task (dm_control, e.g. walker_walk), gym:<env id> or fake")
    domain, task = name.split("_", 1)
    domain = _DMC_DOMAIN_ALIAS.get(domain, domain)
    return {"kind": "dmc", "domain": domain, "task": task, "size": size, "camera": _DMC_CAMERA.get(domain, 0),
            "action_repeat": 2}


def simulator_versions() -> dict[str, str | None]:
    """Installed versions of the packages a rendered dataset depends on (None where absent)."""
    out: dict[str, str | None] = {}
    for name in ("mujoco", "dm-control", "gymnasium", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _to_chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def _check_action(action: Any, act_dim: int) -> np.ndarray:
    a = np.asarray(action, dtype=np.float32).reshape(-1)
    if a.shape != (act_dim,):
        raise TaskError(f"action must have {act_dim} entries, got shape {list(np.shape(action))}")
    if not np.isfinite(a).all():
        raise TaskError("action contains NaN or inf")
    return a


def _gl_strings() -> dict[str, str | None]:
    """Vendor, renderer and version of the OpenGL context current in this thread (None if unavailable)."""
    try:
        from OpenGL import GL

        return {k: GL.glGetString(v).decode() for k, v in
                (("gl_vendor", GL.GL_VENDOR), ("gl_renderer", GL.GL_RENDERER), ("gl_version", GL.GL_VERSION))}
    except Exception:  # no context, no PyOpenGL: the strings are informative only
        return {"gl_vendor": None, "gl_renderer": None, "gl_version": None}


# -- dm_control -----------------------------------------------------------------------------------


def load_dmc(domain: str, task: str, seed: int = 0, render: bool = True):
    """``suite.load(domain, task, task_kwargs={"random": seed}, visualize_reward=False)`` with one-line
    errors for a missing dm_control or an unknown task.

    dm_control picks its OpenGL backend once, when it is first imported, from ``MUJOCO_GL``: headless EGL
    by default for rendering tasks; no backend at all (``disable``) where only states are needed, because an
    OpenGL backend on a CPU machine (Mesa's llvmpipe) loads its own LLVM, which crashes a later Triton import
    in the same process (torch.compile, gta-rl's fused kernels). A process that first loaded a state env and
    then asks for frames gets a one-line "cannot render" error: render in worker processes, as ``make`` and
    ``evaluate`` do."""
    if "dm_control" not in sys.modules:
        os.environ.setdefault("MUJOCO_GL", "egl" if render else "disable")
    try:
        from dm_control import suite
    except ImportError:
        raise TaskError("dm_control is not installed: pip install 'gta-pixel[dmc]' "
                        "(dm-control==1.0.52, mujoco>=4.0.1)") from None
    if (domain, task) not in suite.ALL_TASKS:
        raise TaskError(f"dm_control suite has no task {domain}_{task}")
    try:
        return suite.load(domain, task, task_kwargs={"random": seed}, visualize_reward=False)
    except Exception as exc:  # MuJoCo or dm_control failing to build the model
        raise TaskError(f"cannot load dm_control {domain}_{task} ({type(exc).__name__}: {exc})".splitlines()[0]) from None


class DmcCore:
    """A dm_control suite environment with V-D4RL's action handling: reseeding reset, float32 actions in
    [-1, 1] scaled to the action spec, action repeat with rewards summed. Shared by :class:`DmcTask`
    and the gymnasium state environments of :mod:`gta_pixel.gym_envs`."""

    def __init__(self, domain: str, task: str, action_repeat: int = 2, render: bool = False) -> None:
        if int(action_repeat) < 1:
            raise TaskError(f"action_repeat must be at least 1, got {action_repeat}")
        self.domain, self.task, self.action_repeat = domain, task, int(action_repeat)
        self.env = load_dmc(domain, task, render=render)
        spec = self.env.action_spec()
        self.act_dim = int(np.prod(spec.shape))
        self._low = np.asarray(spec.minimum, dtype=np.float64) * np.ones(spec.shape)
        self._high = np.asarray(spec.maximum, dtype=np.float64) * np.ones(spec.shape)
        self._dtype = spec.dtype
        self.state_dim = int(sum(int(np.prod(s.shape)) for s in self.env.observation_spec().values()))
        limit = self.env._step_limit  # control steps per episode (time limit / control timestep)
        self.max_steps = int(math.ceil(float(limit) / self.action_repeat))

    @staticmethod
    def flatten(observation: dict[str, Any]) -> np.ndarray:
        """The suite's observation dict (ordered) as one float32 vector."""
        return np.concatenate([np.asarray(v, dtype=np.float32).reshape(-1) for v in observation.values()])

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            # What task_kwargs={"random": seed} does at load time (dm_control's check_random_state).
            self.env.task._random = np.random.RandomState(int(seed))
        return self.flatten(self.env.reset().observation)

    def simulator_state(self) -> np.ndarray:
        """The whole integration state of the simulation now (MuJoCo's ``mjSTATE_INTEGRATION``, float64: time,
        qpos, qvel, activations, warm-start accelerations, controls, applied forces, mocap, ...): everything the
        next steps depend on. Recorded at the start of an episode, it lets :meth:`reset_to_state` replay the
        episode from its actions alone (medium-replay, :mod:`gta_pixel.resimulate`)."""
        import mujoco

        return self.env.physics.get_state(sig=mujoco.mjtState.mjSTATE_INTEGRATION).astype(np.float64, copy=True)

    def reset_to_state(self, state: np.ndarray) -> np.ndarray:
        """Start an episode from a state of :meth:`simulator_state` taken right after a reset, exactly as that
        reset left the simulation (the same reset, then the state, then the forward pass the reset ends with);
        returns the observation."""
        import mujoco

        sig = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = self.env.physics
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        size = mujoco.mj_stateSize(physics.model.ptr, sig)
        if state.shape != (size,):
            raise TaskError(f"a {self.domain}_{self.task} simulator state has {size} numbers, got {state.shape[0]}")
        if not np.isfinite(state).all():
            raise TaskError("simulator state contains NaN or inf")
        self.env.reset()  # the step counter and the task's episode variables
        with physics.reset_context():  # reset data, set the state, forward pass without actuation
            physics.set_state(state, sig=sig)
        return self.flatten(self.env.task.get_observation(physics))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        a = _check_action(action, self.act_dim)
        # V-D4RL: float32 action (ActionDTypeWrapper), then action_scale.Wrapper from [-1, 1] to the spec.
        scaled = (self._low + (self._high - self._low) * (a.astype(np.float64) + 1.0) / 2.0).astype(self._dtype)
        reward, discount = 0.0, 1.0
        for _ in range(self.action_repeat):
            ts = self.env.step(scaled)
            reward += (ts.reward or 0.0) * discount
            discount *= ts.discount
            if ts.last():
                break
        last = bool(ts.last())
        terminated = last and discount == 0.0
        return self.flatten(ts.observation), float(reward), terminated, last and not terminated

    def close(self) -> None:
        self.env.close()


class DmcTask:
    """A dm_control suite task rendered as V-D4RL renders it (see the module docstring)."""

    def __init__(self, domain: str, task: str, size: int = 84, camera: int | None = None,
                 action_repeat: int = 2) -> None:
        domain = _DMC_DOMAIN_ALIAS.get(domain, domain)
        self.camera = _DMC_CAMERA.get(domain, 0) if camera is None else int(camera)
        self.size = int(size)
        if self.size < 1:
            raise TaskError(f"size must be positive, got {size}")
        self.core = DmcCore(domain, task, action_repeat, render=True)
        self.act_dim, self.state_dim, self.max_steps = self.core.act_dim, self.core.state_dim, self.core.max_steps
        self.frame_shape = (3, self.size, self.size)
        self.spec = {"kind": "dmc", "domain": domain, "task": task, "size": self.size, "camera": self.camera,
                     "action_repeat": self.core.action_repeat}

    def _render(self) -> np.ndarray:
        try:
            image = self.core.env.physics.render(height=self.size, width=self.size, camera_id=self.camera)
        except Exception as exc:  # no GL backend, bad camera
            raise TaskError(f"cannot render {self.core.domain}_{self.core.task} (MUJOCO_GL="
                            f"{os.environ.get('MUJOCO_GL')}): {type(exc).__name__}: {exc}".splitlines()[0]) from None
        return _to_chw(image)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        state = self.core.reset(seed)
        return state, self._render()

    def simulator_state(self) -> np.ndarray:
        """See :meth:`DmcCore.simulator_state`."""
        return self.core.simulator_state()

    def reset_to_state(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start an episode from a recorded simulator state (:meth:`DmcCore.reset_to_state`)."""
        observation = self.core.reset_to_state(state)
        return observation, self._render()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool, bool]:
        state, reward, terminated, truncated = self.core.step(action)
        return state, self._render(), reward, terminated, truncated

    def renderer(self) -> dict[str, Any]:
        """The OpenGL backend and what it rendered with (CPU and GPU renders differ: never mix them)."""
        physics = self.core.env.physics
        quality = physics.model.vis.quality
        info: dict[str, Any] = {"mujoco_gl": os.environ.get("MUJOCO_GL"), "shadowsize": int(quality.shadowsize),
                                "offsamples": int(quality.offsamples)}
        try:
            self._render()
            with physics.contexts.gl.make_current() as ctx:
                info.update(ctx.call(_gl_strings))
        except Exception:  # informative only
            info.update(gl_vendor=None, gl_renderer=None, gl_version=None)
        return info

    def close(self) -> None:
        self.core.close()


# -- gymnasium ------------------------------------------------------------------------------------


class GymTask:
    """A gymnasium MuJoCo environment rendered offscreen at ``size`` x ``size`` by camera ``camera_id``.
    Actions in [-1, 1] are scaled to the action space (the identity for the locomotion tasks), repeated
    ``action_repeat`` times with rewards summed; ``max_steps`` is the registered time limit in agent steps."""

    def __init__(self, env_id: str, camera_id: int = 0, size: int = 84, action_repeat: int = 1) -> None:
        import gymnasium as gym

        from gta_data.errors import RecipeError
        from gta_data.simulators import make_env

        if int(action_repeat) < 1:
            raise TaskError(f"action_repeat must be at least 1, got {action_repeat}")
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless by default
        self.size, self.camera_id, self.action_repeat = int(size), int(camera_id), int(action_repeat)
        try:
            self.env = make_env(env_id, render_mode="rgb_array", width=self.size, height=self.size,
                                camera_id=self.camera_id)
        except RecipeError as exc:
            raise TaskError(str(exc)) from None
        except TypeError as exc:  # an environment without offscreen render arguments
            raise TaskError(f"{env_id} cannot render offscreen ({exc})") from None
        space = self.env.action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise TaskError(f"{env_id}: pixel tasks need a flat Box action space, not {space}")
        self._low = space.low.astype(np.float64)
        self._high = space.high.astype(np.float64)
        self.act_dim = int(space.shape[0])
        obs_space = self.env.observation_space
        self.state_dim = int(np.prod(obs_space.shape)) if obs_space.shape else 0
        limit = self.env.spec.max_episode_steps if self.env.spec is not None else None
        if not limit:
            raise TaskError(f"{env_id} has no time limit (max_episode_steps): pixel episodes need one")
        self.max_steps = int(math.ceil(limit / self.action_repeat))
        self.frame_shape = (3, self.size, self.size)
        self.spec = {"kind": "gym", "env_id": env_id, "camera_id": self.camera_id, "size": self.size,
                     "action_repeat": self.action_repeat}

    def _render(self) -> np.ndarray:
        try:
            return _to_chw(self.env.render())
        except Exception as exc:
            raise TaskError(f"cannot render {self.spec['env_id']} (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): "
                            f"{type(exc).__name__}: {exc}".splitlines()[0]) from None

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        obs, _ = self.env.reset(seed=None if seed is None else int(seed))
        return np.asarray(obs, dtype=np.float32).reshape(-1), self._render()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool, bool]:
        a = _check_action(action, self.act_dim)
        scaled = (self._low + (self._high - self._low) * (a.astype(np.float64) + 1.0) / 2.0).astype(np.float32)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            obs, r, terminated, truncated, _ = self.env.step(scaled)
            reward += float(r)
            if terminated or truncated:
                break
        return np.asarray(obs, dtype=np.float32).reshape(-1), self._render(), reward, bool(terminated), bool(truncated)

    def simulator_state(self) -> np.ndarray:
        """qpos and qvel (float64), the MuJoCo state gymnasium's ``set_state`` takes (gta-data's replay files)."""
        base = self.env.unwrapped
        if not hasattr(base, "set_state"):
            raise TaskError(f"{self.spec['env_id']} is not a MuJoCo environment: it has no simulator state")
        return np.concatenate([base.data.qpos, base.data.qvel]).astype(np.float64)

    def reset_to_state(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start an episode from recorded (qpos, qvel), as gta-data re-simulates its replay files: a reset (the
        wrappers' time limit and checks), then ``set_state``."""
        base = self.env.unwrapped
        nq = int(base.model.nq)
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (nq + int(base.model.nv),):
            raise TaskError(f"a {self.spec['env_id']} state has {nq + int(base.model.nv)} numbers, got {state.shape[0]}")
        self.env.reset(seed=0)
        base.set_state(state[:nq], state[nq:])
        return np.asarray(base._get_obs(), dtype=np.float32).reshape(-1), self._render()

    def renderer(self) -> dict[str, Any]:
        self._render()  # makes the offscreen context current in this thread
        return {"mujoco_gl": os.environ.get("MUJOCO_GL"), **_gl_strings()}

    def close(self) -> None:
        self.env.close()


# -- fake -----------------------------------------------------------------------------------------


class FakeTask:
    """Deterministic synthetic images of a tiny linear system, for tests: no simulator, no renderer.

    State s (``state_dim``) evolves as s' = A s + B a (A a damped rotation, B fixed, both drawn once from a
    fixed seed), repeated ``action_repeat`` times; reward exp(-|s'|^2) per repeat, so in (0, action_repeat].
    The frame is uint8(127.5 + 127 tanh(U s)) with U a fixed [3, H, W, state_dim] basis: every state change
    shows in the pixels. ``reset(seed)`` draws s from U(-1, 1) with ``numpy.random.default_rng(seed)``. With
    ``terminate_above`` set an episode terminates once max|s| exceeds it; otherwise a time limit of
    ``max_steps`` truncates it.
    """

    def __init__(self, size: int = 16, act_dim: int = 2, state_dim: int = 4, max_steps: int = 20,
                 action_repeat: int = 1, terminate_above: float | None = None) -> None:
        if min(int(size), int(act_dim), int(state_dim), int(max_steps), int(action_repeat)) < 1:
            raise TaskError("fake task sizes must be positive")
        self.size, self.act_dim, self.state_dim = int(size), int(act_dim), int(state_dim)
        self.max_steps, self.action_repeat = int(max_steps), int(action_repeat)
        self.terminate_above = None if terminate_above is None else float(terminate_above)
        rng = np.random.default_rng(20240924)
        q, _ = np.linalg.qr(rng.normal(size=(self.state_dim, self.state_dim)))
        self._a = 0.95 * q
        self._b = 0.3 * rng.normal(size=(self.state_dim, self.act_dim))
        self._u = rng.normal(size=(3, self.size, self.size, self.state_dim)) / np.sqrt(self.state_dim)
        self.frame_shape = (3, self.size, self.size)
        self.spec = {"kind": "fake", "size": self.size, "act_dim": self.act_dim, "state_dim": self.state_dim,
                     "max_steps": self.max_steps, "action_repeat": self.action_repeat,
                     "terminate_above": self.terminate_above}
        self._rng = np.random.default_rng(0)
        self._s = np.zeros(self.state_dim)
        self._t = 0

    def _frame(self) -> np.ndarray:
        return np.clip(np.rint(127.5 + 127.0 * np.tanh(self._u @ self._s)), 0, 255).astype(np.uint8)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng if seed is None else np.random.default_rng(int(seed))
        self._s = rng.uniform(-1.0, 1.0, self.state_dim)
        self._t = 0
        return self._s.astype(np.float32), self._frame()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool, bool]:
        a = np.clip(_check_action(action, self.act_dim).astype(np.float64), -1.0, 1.0)
        reward, terminated = 0.0, False
        for _ in range(self.action_repeat):
            self._s = self._a @ self._s + self._b @ a
            reward += float(np.exp(-self._s @ self._s))
            if self.terminate_above is not None and np.abs(self._s).max() > self.terminate_above:
                terminated = True
                break
        self._t += 1
        truncated = not terminated and self._t >= self.max_steps
        return self._s.astype(np.float32), self._frame(), reward, terminated, truncated

    def simulator_state(self) -> np.ndarray:
        """The linear system's state s (float64): what :meth:`reset_to_state` restarts from."""
        return self._s.astype(np.float64, copy=True)

    def reset_to_state(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (self.state_dim,):
            raise TaskError(f"a fake task state has {self.state_dim} numbers, got {state.shape[0]}")
        self._s = state.copy()
        self._t = 0
        return self._s.astype(np.float32), self._frame()

    def renderer(self) -> dict[str, Any]:
        return {"fake": True}

    def close(self) -> None:
        pass
