"""What a SAC run keeps of its experience: every transition in insertion order on the device (the buffer never
overwrites, so its first K rows are what the agent had seen at step K: D4RL's medium-replay), and the simulator
state each episode started from (so that gta-data can re-simulate those rows from actions alone)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gta_rl.behaviour.config import S_BATCH, SACError
from gta_rl.rng import SeedStreams

COLUMNS = ("obs", "act", "rew", "next_obs", "term")  # what updates sample: one packed float32 row on the device
BUFFER_KEYS = (*COLUMNS, "trunc", "env")


class ReplayBuffer:
    """Every transition in insertion order: the sampled columns packed in one float32 row per transition on
    the device, ``trunc`` and ``env`` (the vector-env copy it came from; only exports read them) on the host.

    Two ways in. :meth:`add` writes rows through at once (the readable path). With ``stage_rows > 0``,
    :meth:`add` only stages rows in a pinned host buffer and :meth:`commit` copies everything staged to the
    device in one transfer. ``size`` counts the committed rows, the only ones :meth:`sample` draws from;
    ``count`` all rows added (their buffer row indices are fixed when they are added)."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device, stage_rows: int = 0) -> None:
        self.capacity, self.size, self.staged = capacity, 0, 0
        self.device = device
        # The size again, on the device: sampling reads it there, so a captured update needs no new constant.
        self.size_t = torch.zeros((), dtype=torch.int64, device=device)
        widths = {"obs": obs_dim, "act": act_dim, "rew": 1, "next_obs": obs_dim, "term": 1}
        self.slices, start = {}, 0
        for key in COLUMNS:
            self.slices[key] = slice(start, start + widths[key])
            start += widths[key]
        self.rows = torch.zeros(capacity, start, dtype=torch.float32, device=device)
        self.data = {key: self._column(self.rows, key) for key in COLUMNS}
        self.data["trunc"] = torch.zeros(capacity, dtype=torch.bool)
        self.data["env"] = torch.zeros(capacity, dtype=torch.int32)
        # Two pinned staging buffers used in turn: one may still be copying while the other fills.
        pin = device.type == "cuda"
        self._stage = [torch.zeros(max(stage_rows, 0), start, dtype=torch.float32, pin_memory=pin)
                       for _ in range(2 if stage_rows > 0 else 0)]
        self._events = [torch.cuda.Event() if pin else None for _ in self._stage]
        self._turn = 0

    def _column(self, rows: Tensor, key: str) -> Tensor:
        cut = self.slices[key]
        return rows[:, cut.start] if key in ("rew", "term") else rows[:, cut]  # [N] for the scalar columns

    @property
    def count(self) -> int:
        return self.size + self.staged

    def add(self, rows: dict[str, np.ndarray]) -> None:
        n = len(rows["rew"])
        if self.count + n > self.capacity:
            raise SACError(f"replay buffer full ({self.capacity} transitions)")
        at = self.count
        for key in ("trunc", "env"):
            self.data[key][at:at + n] = torch.from_numpy(np.asarray(rows[key]))
        if not self._stage:
            for key in COLUMNS:
                dst = self.data[key]
                dst[at:at + n] = torch.from_numpy(np.asarray(rows[key])).to(dst.device, dst.dtype, non_blocking=True)
            self.size += n
            self.size_t.fill_(self.size)
            return
        stage = self._stage[self._turn]
        if self.staged == 0 and self._events[self._turn] is not None:
            self._events[self._turn].synchronize()  # its previous transfer has left this buffer
        if self.staged + n > stage.shape[0]:
            raise SACError(f"staging buffer full ({stage.shape[0]} rows): commit first")
        view = stage.numpy()
        for key in COLUMNS:
            value = np.asarray(rows[key])
            view[self.staged:self.staged + n, self.slices[key]] = value.reshape(n, -1)
        self.staged += n

    def commit(self) -> None:
        """Copy the staged rows to the device (one transfer) and let :meth:`sample` draw from them."""
        if not self.staged:
            return
        n = self.staged
        self.rows[self.size:self.size + n].copy_(self._stage[self._turn][:n], non_blocking=True)
        if self._events[self._turn] is not None:
            self._events[self._turn].record()
        self._turn = 1 - self._turn
        self.size += n
        self.staged = 0
        self.size_t.fill_(self.size)

    def sample(self, rng: SeedStreams, batch_size: int) -> dict[str, Tensor]:
        # Uniform over the committed rows: SeedStreams.randint's multiply-shift with the size as a tensor.
        idx = (rng.bits(S_BATCH, (batch_size,))[0] * self.size_t) >> 32
        rows = self.rows[idx]
        return {k: self._column(rows, k) for k in COLUMNS}

    def state(self) -> dict[str, Tensor]:
        if self.staged:
            raise SACError("the replay buffer has staged rows: commit before saving")
        return {f"buffer.{k}": v[: self.size] for k, v in self.data.items()}

    def load(self, state: dict[str, Tensor]) -> None:
        self.size, self.staged = int(state["buffer.rew"].shape[0]), 0
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
