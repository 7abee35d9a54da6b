"""The policy of D4RL v2's locomotion ``random`` datasets: a SAC actor at its random initialisation, sampled.

D4RL's first (v0) random datasets took uniform actions; its v2 datasets were made with a randomly initialised
policy instead, the SAC actor of rlkit (the library D4RL's behaviour policies were trained with:
``TanhGaussianPolicy``) before any training. Its initialisation fixes what that policy does:

- hidden layers ``hidden`` wide, ReLU, weights ``U(+-1/sqrt(n))`` with n the layer's *output* width (rlkit's
  ``fanin_init`` reads the first dimension of torch's [out, in] weight), biases 0.1;
- a mean head and a log-std head, weights and biases ``U(+-1e-3)``; log std clipped to [-20, 2];
- actions ``tanh(mean + std * eps)``, eps standard normal, rescaled to the action box.

So the initial actions are close to ``tanh(N(0, 1))`` in every dimension, nearly independent of the state:
not uniform (their density rises towards the bounds and their spread is wider than U(-1, 1)'s). The weights
here come from numpy (the same distribution as rlkit's torch draws, not its bits), from a recorded seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

HIDDEN = (256, 256)  # rlkit's and D4RL's SAC width
HEAD_INIT = 1e-3  # rlkit's init_w of the last layers
HIDDEN_BIAS = 0.1  # rlkit's b_init_value
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit's LOG_SIG_MIN / LOG_SIG_MAX


@dataclass
class InitialActor:
    """rlkit's tanh-Gaussian SAC actor with its weights as numpy arrays ([in, out] layout)."""

    hidden: list[tuple[np.ndarray, np.ndarray]]
    mean_head: tuple[np.ndarray, np.ndarray]
    log_std_head: tuple[np.ndarray, np.ndarray]
    action_low: np.ndarray
    action_high: np.ndarray

    def distribution(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pre-tanh Gaussian (mean, log_std), each [B, act] float32, of observations [B, obs]."""
        x = np.asarray(obs, dtype=np.float32)
        for w, b in self.hidden:
            x = np.maximum(x @ w + b, 0.0)
        mean = x @ self.mean_head[0] + self.mean_head[1]
        log_std = np.clip(x @ self.log_std_head[0] + self.log_std_head[1], LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std

    def sample(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Stochastic actions [B, act] in the action box, noise drawn from ``rng``."""
        mean, log_std = self.distribution(obs)
        noise = rng.standard_normal(mean.shape).astype(np.float32)
        scale = (self.action_high - self.action_low) / 2.0
        return (np.tanh(mean + np.exp(log_std) * noise) * scale + (self.action_high + self.action_low) / 2.0
                ).astype(np.float32)


def initial_actor(obs_dim: int, act_dim: int, rng: np.random.Generator, low: np.ndarray, high: np.ndarray,
                  hidden: tuple[int, ...] = HIDDEN) -> InitialActor:
    """A freshly initialised actor (rlkit's initialisation, drawn from ``rng``)."""
    layers = []
    for fan_in, fan_out in pairwise([obs_dim, *hidden]):
        bound = 1.0 / np.sqrt(fan_out)  # rlkit's fanin_init on the [out, in] weight: its first dimension
        layers.append((rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                       np.full(fan_out, HIDDEN_BIAS, dtype=np.float32)))
    last = hidden[-1] if hidden else obs_dim

    def head() -> tuple[np.ndarray, np.ndarray]:
        return (rng.uniform(-HEAD_INIT, HEAD_INIT, (last, act_dim)).astype(np.float32),
                rng.uniform(-HEAD_INIT, HEAD_INIT, act_dim).astype(np.float32))

    mean_head = head()
    log_std_head = head()
    return InitialActor(layers, mean_head, log_std_head, np.asarray(low, np.float32), np.asarray(high, np.float32))
