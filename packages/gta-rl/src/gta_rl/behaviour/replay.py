"""What a SAC run keeps of its experience: every transition in insertion order on the device (the buffer never
overwrites, so its first K rows are what the agent had seen at step K: D4RL's medium-replay), and the simulator
state each episode started from (so that gta-data can re-simulate those rows from actions alone)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gta_rl.behaviour.config import S_BATCH, SACError
from gta_rl.rng import SeedStreams

BUFFER_KEYS = ("obs", "act", "rew", "next_obs", "term", "trunc", "env")


class ReplayBuffer:
    """Every transition in insertion order, on the device; ``env`` is the vector-env copy it came from."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.capacity, self.size = capacity, 0
        # The size again, on the device: sampling reads it there, so a captured update needs no new constant.
        self.size_t = torch.zeros((), dtype=torch.int64, device=device)
        f32 = {"dtype": torch.float32, "device": device}
        self.data = {
            "obs": torch.zeros(capacity, obs_dim, **f32), "act": torch.zeros(capacity, act_dim, **f32),
            "rew": torch.zeros(capacity, **f32), "next_obs": torch.zeros(capacity, obs_dim, **f32),
            "term": torch.zeros(capacity, **f32),
            "trunc": torch.zeros(capacity, dtype=torch.bool, device=device),
            "env": torch.zeros(capacity, dtype=torch.int32, device=device),
        }

    def add(self, rows: dict[str, np.ndarray]) -> None:
        n = len(rows["rew"])
        if self.size + n > self.capacity:
            raise SACError(f"replay buffer full ({self.capacity} transitions)")
        for key, value in rows.items():
            dst = self.data[key]
            dst[self.size:self.size + n] = torch.from_numpy(np.asarray(value)).to(dst.device, dst.dtype,
                                                                                    non_blocking=True)
        self.size += n
        self.size_t.fill_(self.size)

    def sample(self, rng: SeedStreams, batch_size: int) -> dict[str, Tensor]:
        # Uniform over the rows so far: SeedStreams.randint's multiply-shift with the size as a tensor.
        idx = (rng.bits(S_BATCH, (batch_size,))[0] * self.size_t) >> 32
        return {k: self.data[k][idx] for k in ("obs", "act", "rew", "next_obs", "term")}

    def state(self) -> dict[str, Tensor]:
        return {f"buffer.{k}": v[: self.size] for k, v in self.data.items()}

    def load(self, state: dict[str, Tensor]) -> None:
        self.size = int(state["buffer.rew"].shape[0])
        self.size_t.fill_(self.size)
        for k, v in self.data.items():
            v[: self.size] = state[f"buffer.{k}"].to(v.device)


class EpisodeStarts:
    """Buffer row of each episode's first transition and the simulator state (qpos, qvel) it started from."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.states: list[np.ndarray] = []

    def add(self, row: int, state: np.ndarray) -> None:
        self.rows.append(row)
        self.states.append(state)

    def state(self) -> dict[str, Tensor]:
        if not self.rows:
            return {}
        return {"episodes.start_rows": torch.tensor(self.rows, dtype=torch.int64),
                "episodes.start_states": torch.from_numpy(np.stack(self.states))}

    def load(self, state: dict[str, Tensor]) -> None:
        if "episodes.start_rows" in state:
            self.rows = state["episodes.start_rows"].cpu().tolist()
            self.states = list(state["episodes.start_states"].cpu().double().numpy())
