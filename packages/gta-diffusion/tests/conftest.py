"""Shared fixtures: a tiny, learnable 1-d dataset written as a GTA store.

Each episode has its own mean action m ~ U(-1, 1); a_t = clip(m + 0.1 eps), s_{t+1} = s_t + 0.1 a_t and
r_t = a_t, so the return of a window is determined by the actions and a conditional model must learn
that higher conditions mean larger actions and rewards. Every fourth episode ends in a true terminal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gta_data import Transitions, write_store

ENV_ID = "ToyLine-v0"


def make_toy(path, *, episodes: int = 48, length: int = 12, seed: int = 0, env_id: str = ENV_ID,
             short: int = 0):
    """Write the toy store; ``short`` extra episodes of length 2 exercise the skipping of short episodes."""
    rng = np.random.default_rng(seed)
    parts, ends, n = [], [], 0
    lengths = [length] * episodes + [2] * short
    for e, ep_len in enumerate(lengths):
        m = rng.uniform(-1, 1)
        a = np.clip(m + 0.1 * rng.standard_normal(ep_len), -1, 1).astype(np.float32)
        s = np.concatenate([[rng.uniform(-0.2, 0.2)], np.zeros(ep_len)]).astype(np.float32)
        for t in range(ep_len):
            s[t + 1] = s[t] + 0.1 * a[t]
        terminal = np.zeros(ep_len, bool)
        timeout = np.zeros(ep_len, bool)
        (terminal if e % 4 == 3 else timeout)[-1] = True
        parts.append(Transitions(observations=s[:-1, None], actions=a[:, None], rewards=a,
                                 next_observations=s[1:, None], terminals=terminal, timeouts=timeout))
        n += ep_len
        ends.append(n)
    return write_store(path, Transitions.concatenate(parts), np.asarray(ends), env_id=env_id,
                       ref_min_score=-12.0, ref_max_score=12.0)


@pytest.fixture
def toy_store(tmp_path):
    return make_toy(tmp_path / "toy.zarr")


@pytest.fixture(scope="session")
def make_toy_store():
    """The store factory itself (test modules cannot import conftest under --import-mode=importlib)."""
    return make_toy


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models on a shared 2-core CI machine: one intra-op thread is ~30x faster than two under load
    (OpenMP threads spin while waiting for a core), so these tests run single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
