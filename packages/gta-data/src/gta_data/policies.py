"""Behaviour policy files: SAC actors small enough to live in the repository, run with numpy.

D4RL made its locomotion datasets by rolling out SAC policies (docs/datasets.md): "medium" is a
policy early-stopped at about one third of the expert's return, "expert" a fully trained one, both with
*stochastic* actions. gta-data must not need torch, so a policy file holds the actors' weights as plain
float32 arrays in one ``.npz`` (no pickle: the metadata is a JSON string) and this module runs them.

File layout (``save_policy_file`` / ``load_policy_file``)::

    __meta__          0-d str   JSON: format, version, env_id, obs_dim, act_dim, hidden, log_std_min,
                                log_std_max, action_low, action_high, policies: {name: {step,
                                eval_return, eval_return_std, ...}}, provenance
    <name>/w<i>       float32   [in, out]  weight of layer i (x @ w + b)
    <name>/b<i>       float32   [out]

The actor is the tanh-Gaussian of SAC (Haarnoja et al., 2018, appendix C): ReLU MLP -> [mean, raw] with
log_std = min + (max - min) (tanh(raw) + 1) / 2 (CleanRL's bounded form), a = tanh(mean + std * eps)
rescaled from [-1, 1] to [action_low, action_high]. gta_rl.sac writes these files from its torch actor
and tests that both forward passes agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from gta_data.npzfile import read_npz, write_npz

FORMAT = "gta-behaviour-policies"
VERSION = 1


class PolicyError(ValueError):
    """A malformed or unreadable policy file (one-line message)."""


@dataclass
class NumpyActor:
    """One tanh-Gaussian SAC actor. ``weights`` [(w [in, out], b [out]), ...], last layer out = 2 act."""

    weights: list[tuple[np.ndarray, np.ndarray]]
    log_std_min: float
    log_std_max: float
    action_low: np.ndarray  # [act]
    action_high: np.ndarray  # [act]
    info: dict[str, Any] = field(default_factory=dict)  # step, eval_return, eval_return_std, ...

    @property
    def obs_dim(self) -> int:
        return int(self.weights[0][0].shape[0])

    @property
    def act_dim(self) -> int:
        return int(self.weights[-1][0].shape[1]) // 2

    def distribution(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pre-tanh Gaussian of each observation: (mean, log_std), each [B, act] float32."""
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise PolicyError(f"observations must be [B, {self.obs_dim}], got {list(x.shape)}")
        for i, (w, b) in enumerate(self.weights):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = np.maximum(x, 0.0)
        mean, raw = x[:, : self.act_dim], x[:, self.act_dim:]
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (np.tanh(raw) + 1.0)
        return mean, log_std.astype(np.float32)

    def act(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Actions [B, act]: the deterministic tanh(mean) when ``noise`` is None, else the sample
        tanh(mean + std * noise) for standard normal ``noise`` [B, act] (the reparameterisation)."""
        mean, log_std = self.distribution(obs)
        u = mean if noise is None else mean + np.exp(log_std) * np.asarray(noise, dtype=np.float32)
        scale = (self.action_high - self.action_low) / 2.0
        return (np.tanh(u) * scale + (self.action_high + self.action_low) / 2.0).astype(np.float32)

    def sample(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Stochastic actions (what D4RL's medium/expert data used), noise drawn from ``rng``."""
        noise = rng.standard_normal((np.asarray(obs).shape[0], self.act_dim)).astype(np.float32)
        return self.act(obs, noise)


@dataclass
class PolicyFile:
    env_id: str
    actors: dict[str, NumpyActor]
    meta: dict[str, Any]


def save_policy_file(path: str | os.PathLike, env_id: str, actors: dict[str, NumpyActor],
                     provenance: dict[str, Any] | None = None) -> Path:
    """Write ``actors`` (e.g. {"medium": ..., "expert": ...}) of one environment atomically."""
    if not actors:
        raise PolicyError("a policy file needs at least one actor")
    first = next(iter(actors.values()))
    arrays: dict[str, np.ndarray] = {}
    for name, actor in actors.items():
        if "/" in name or not name:
            raise PolicyError(f"bad policy name {name!r}")
        if (actor.obs_dim, actor.act_dim) != (first.obs_dim, first.act_dim):
            raise PolicyError(f"policy {name!r} has other dimensions than {next(iter(actors))!r}")
        for i, (w, b) in enumerate(actor.weights):
            arrays[f"{name}/w{i}"] = np.ascontiguousarray(w, dtype=np.float32)
            arrays[f"{name}/b{i}"] = np.ascontiguousarray(b, dtype=np.float32).reshape(-1)
    meta = {
        "format": FORMAT, "version": VERSION, "env_id": env_id,
        "obs_dim": first.obs_dim, "act_dim": first.act_dim,
        "log_std_min": first.log_std_min, "log_std_max": first.log_std_max,
        "action_low": np.asarray(first.action_low, dtype=np.float64).tolist(),
        "action_high": np.asarray(first.action_high, dtype=np.float64).tolist(),
        "policies": {name: {"layers": len(a.weights), **a.info} for name, a in actors.items()},
        "provenance": provenance or {},
    }
    return write_npz(path, arrays, meta)


def policy_dir() -> Path:
    """Where the behaviour policy files live: $GTA_POLICY_DIR, else ``packages/gta-data/policies`` of the
    source checkout (the files are repository data, not package data)."""
    env = os.environ.get("GTA_POLICY_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "policies"


def load_policy_file(path: str | os.PathLike) -> PolicyFile:
    """Read a policy file written by :func:`save_policy_file` (no pickle)."""
    arrays, meta = read_npz(path, name="policy file", kind="behaviour policy file", fmt=FORMAT,
                            version=VERSION, error=PolicyError)
    low = np.asarray(meta["action_low"], dtype=np.float32)
    high = np.asarray(meta["action_high"], dtype=np.float32)
    actors = {}
    for name, info in meta["policies"].items():
        try:
            weights = [(arrays[f"{name}/w{i}"], arrays[f"{name}/b{i}"]) for i in range(int(info["layers"]))]
        except KeyError as exc:
            raise PolicyError(f"{path}: policy {name!r} lacks array {exc.args[0]}") from None
        dims = [w.shape for w, _ in weights]
        if dims[0][0] != meta["obs_dim"] or dims[-1][1] != 2 * meta["act_dim"] or any(
                a[1] != b[0] for a, b in pairwise(dims)):
            raise PolicyError(f"{path}: policy {name!r} has inconsistent layer shapes {dims}")
        extra = {k: v for k, v in info.items() if k != "layers"}
        actors[name] = NumpyActor(weights, float(meta["log_std_min"]), float(meta["log_std_max"]), low, high, extra)
    return PolicyFile(meta["env_id"], actors, meta)


def random_actor(obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64), seed: int = 0,
                 log_std_min: float = -5.0, log_std_max: float = 2.0, **info: Any) -> NumpyActor:
    """An actor with random weights (nn.Linear's default U(+-1/sqrt(fan_in))), for tests and smoke runs."""
    rng = np.random.default_rng(seed)
    sizes = [obs_dim, *hidden, 2 * act_dim]
    weights = []
    for fan_in, fan_out in pairwise(sizes):
        bound = 1.0 / np.sqrt(fan_in)
        weights.append((rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                        rng.uniform(-bound, bound, fan_out).astype(np.float32)))
    return NumpyActor(weights, log_std_min, log_std_max, -np.ones(act_dim, np.float32),
                      np.ones(act_dim, np.float32), dict(info))
