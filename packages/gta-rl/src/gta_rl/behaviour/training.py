"""The online SAC loop: act in a gymnasium vector env, store every transition, update once per transition after
the warm-up, and checkpoint an evaluated actor every ``checkpoint_every`` steps (with the full resumable state).

All random draws (warm-up actions, exploration noise, batch indices, reparameterisation noise) come from
counter-based streams (``gta_rl.rng``), and update metrics are summed on the device and read only every
``log_every`` steps, so the update loop never waits for the GPU; only the actions of each environment step go to
the host. The update runs eagerly, compiled or as a CUDA graph replay (gta-data's shared
:class:`~gta_data.accel.cuda_graph.CudaGraphRunner`).

How data cross between host and device (SACConfig's loop settings):

- readable loop: each transition is written to the device buffer as it comes (a copy per column) and each
  step's actions are read back synchronously: the reference;
- staged loop (default; the same transitions, losses and checkpoints as the readable loop, tested): the
  transitions of an env step are staged in pinned host memory and copied in one transfer, observations and
  actions cross through pinned memory. With ``transfer_every = K > 1`` the staged rows are copied once K
  or more are staged (and at every checkpoint): an update samples only the rows copied so far, so the
  newest up to K - 1 transitions (plus one env step's) are not yet in its batches;
- ``overlap``: each env step's actions are computed and copied back, then the updates owed by the previous
  env step are launched, and the host steps the envs while the GPU runs them. The actions therefore come
  from the actor before the previous env step's updates (one env step stale); the updates themselves sample
  exactly what they would without overlap. Not stale after a checkpoint (which first runs every update owed)
  or after an autoreset step (which collects nothing and owes no update).

Resume. Every checkpoint writes the small files: ``resume.safetensors`` (networks, optimizers, temperature,
counters, the metrics being summed: a few MB for 256-256 networks) and ``actions.safetensors`` (every action
sent and its env copy, 4 |A| + 1 bytes a transition, and float64 sums of the rewards of every 10,000
transitions). The full state with the buffer
(``state.safetensors``, which the exports read) is written every ``state_every`` steps and at the end. A
resume from the small files rebuilds the buffer, the episode start states and the env copies themselves by
re-simulating every recorded action from the run's first reset (MuJoCo and gymnasium's seeded resets are
deterministic; each env copy's episode ends and the reward sums are checked against the record), so the run goes on exactly as if it had never
stopped: no episode is cut, and the random streams are counter-based, so there is no generator state to
keep. One exception: a wall-clock stop (``deadline``) between checkpoints under ``overlap`` or
``transfer_every`` > 1 first runs the updates still owed and commits the staged rows, which the uninterrupted
run would have done later; the resumed run is then a valid SAC run, not the same one. A run directory with a full state newer than its small files (or none: a run from before them)
resumes from the full state as before: the episodes in progress are cut there (their last stored
transition is marked as a timeout) and every env copy starts a new episode from a seed derived from the
step; the small files written after that record the reset, so they re-simulate it too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gta_data.accel.cuda_graph import CudaGraphRunner, compile_step
from gta_data.accel.devices import resolve_device
from gta_data.jsonl import JsonlLog
from gta_rl.behaviour.agent import SACAgent
from gta_rl.behaviour.config import (
    ACTIONS,
    ACTORS,
    CHECKPOINTS,
    CONFIG,
    METRICS,
    RESUME,
    S_EXPLORE,
    S_WARMUP,
    STATE,
    SACConfig,
    SACError,
    is_sac_config,
)
from gta_rl.behaviour.export import read_checkpoints
from gta_rl.behaviour.replay import EpisodeStarts, ReplayBuffer
from gta_rl.checkpoint import load_checkpoint, save_checkpoint, write_json
from gta_rl.evaluation import Evaluator, flatten_observation, make_env

METRIC_NAMES = ("critic_loss", "actor_loss", "alpha", "entropy")


def update_runner(agent: SACAgent, buffer: ReplayBuffer, batch_size: int, *, compile: bool = False,
                  cuda_graph: bool = False, warmup: int = 3) -> CudaGraphRunner[Tensor]:
    """``runner()`` runs one SAC update (batch sampling included) and returns its metrics [4] on the device:
    eagerly, compiled, or as the replay of a CUDA graph. Every draw comes from counter-based streams keyed by
    the device step counter and the buffer size is read on the device, so a replay is the same update as an
    eager call."""
    def step() -> Tensor:
        batch = buffer.sample(agent.streams(agent.update_step), batch_size)
        return agent.update(batch["obs"], batch["act"], batch["rew"], batch["next_obs"], batch["term"])

    fn = compile_step(step, error=SACError) if compile else step
    return CudaGraphRunner(fn, cuda_graph=cuda_graph, device=agent.scale.device, warmup=warmup, error=SACError)


def train_sac(cfg: SACConfig, out: str | Path, *, resume: bool = False, stop_after: int | None = None,
              deadline: float | None = None, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a SAC run in ``out``; returns {step, updates, checkpoints}. ``stop_after`` ends this
    call after that many more environment steps (tests use it to simulate an interruption); ``deadline`` (a
    ``time.time()`` value) ends it at that wall-clock time, with a checkpoint (evaluated actor and full state)
    where it stopped, so that the run can be resumed or exported from there."""
    cfg.check()
    out = Path(out)
    device = resolve_device(cfg.device, SACError)
    _check_run_dir(cfg, out, resume)
    envs, record_starts = _make_envs(cfg)
    try:
        run = _Run(cfg, out, envs, record_starts, device, resume)
        end = cfg.total_steps if stop_after is None else min(cfg.total_steps, run.step + stop_after)
        evaluator = Evaluator(cfg.env_id, 1, cfg.eval_episodes, seed_base=cfg.eval_seed, asynchronous=cfg.eval_async)
        try:
            run.loop(end, evaluator, deadline, progress)
        finally:
            evaluator.close()
    finally:
        envs.close()
    # (A deadline that passed before the first step leaves a run without checkpoints.)
    checkpoints = read_checkpoints(out) if (out / CHECKPOINTS).exists() else []
    return {"step": run.step, "updates": int(run.agent.update_step), "checkpoints": checkpoints}


def _check_run_dir(cfg: SACConfig, out: Path, resume: bool) -> None:
    """Refuse a resume of another config and an ``out`` holding something else; clear an earlier start of
    this run that saved nothing."""
    if resume:
        if not (out / STATE).exists() and not (out / RESUME).exists():
            raise SACError(f"nothing to resume in {out} (no {RESUME} or {STATE})")
        saved = json.loads((out / CONFIG).read_text())
        saved["hidden"] = tuple(saved["hidden"])
        # How the run executes may change on resume; what it computes may not (--overlap and --transfer-every
        # change which actor acts and which rows a batch can draw).
        free = ("device", "compile", "cuda_graph", "env_async", "eval_async", "state_every", "readable_loop")
        if {k: v for k, v in saved.items() if k not in free} != {
                k: v for k, v in asdict(cfg).items() if k not in free}:
            raise SACError(f"the config differs from the one of the run in {out}")
    elif out.exists() and any(out.iterdir()):
        if (_holds_sac_config(out) and not (out / STATE).exists() and not (out / RESUME).exists()
                and not any((out / ACTORS).glob("*"))):
            # An earlier start that saved nothing (stopped before its first checkpoint, or failed): start again.
            for name in (CONFIG, METRICS, CHECKPOINTS):
                (out / name).unlink(missing_ok=True)
        else:
            raise SACError(f"{out} is not empty (pass resume to continue a run)")


REWARD_BLOCK = 10_000  # rows per float64 reward sum of the actions record (what a re-simulation is checked by)


def _block_sums(rewards: np.ndarray) -> np.ndarray:
    """float64 sums of consecutive blocks of REWARD_BLOCK rewards (the last block may be shorter)."""
    if not len(rewards):
        return np.zeros(0)
    return np.add.reduceat(rewards.astype(np.float64), np.arange(0, len(rewards), REWARD_BLOCK))


def _saved_step(path: Path) -> int:
    """The step of a saved state (its metadata only)."""
    return int(load_checkpoint(path, keys=())[1]["step"])


def _holds_sac_config(out: Path) -> bool:
    try:
        return is_sac_config(json.loads((out / CONFIG).read_text()))
    except (OSError, ValueError):
        return False


def _make_envs(cfg: SACConfig):
    """The training vector env (next-step autoreset) and whether its simulator states can be recorded."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    probe = make_env(cfg.env_id)  # a clear error for an unknown env before spawning copies
    has_state = hasattr(probe.unwrapped, "state_vector")  # MuJoCo: episode start states can be recorded
    spaces = (probe.observation_space, probe.action_space)
    probe.close()
    if not all(isinstance(space, gym.spaces.Box) for space in spaces):
        raise SACError(f"{cfg.env_id}: SAC here needs vector (Box) observations and actions, not "
                       f"{type(spaces[0]).__name__} / {type(spaces[1]).__name__}")
    vector = gym.vector.AsyncVectorEnv if cfg.env_async else gym.vector.SyncVectorEnv
    envs = vector([lambda: make_env(cfg.env_id) for _ in range(cfg.num_envs)], autoreset_mode=AutoresetMode.NEXT_STEP)
    return envs, has_state


class _Collector:
    """The env side of a run: the copies' current observations, their episodes in progress, and the buffer
    rows and start states (:class:`EpisodeStarts`) that every transition they make is stored with."""

    def __init__(self, envs, num_envs: int, buffer: ReplayBuffer, starts: EpisodeStarts | None) -> None:
        self.envs, self.n, self.buffer, self.starts = envs, num_envs, buffer, starts
        self.last_row = np.full(num_envs, -1, dtype=np.int64)  # last buffer row of each env copy
        self.done = np.zeros(num_envs, dtype=bool)
        self.ep_return = np.zeros(num_envs)
        self.finished: list[float] = []  # returns of the episodes ended since the last metric record
        self.pending: list[np.ndarray | None] = []  # each copy's next episode start state (until stored)
        self.obs = np.zeros((num_envs, 0), dtype=np.float32)

    def reset(self, seeds: list[int]) -> None:
        obs, _ = self.envs.reset(seed=seeds)
        self.obs = flatten_observation(obs, None, self.n)
        self.pending = _reset_states(self.envs) if self.starts is not None else []

    def step(self, action: np.ndarray) -> int:
        """Step every copy; store the transitions (not a copy's autoreset step); the number stored."""
        next_obs, reward, terminated, truncated, _ = self.envs.step(action)
        next_obs = flatten_observation(next_obs, None, self.n)
        # NEXT_STEP autoreset: a copy that finished last step was only reset now; not a transition.
        valid = ~self.done
        n_valid = int(valid.sum())
        if n_valid:
            self.buffer.add({"obs": self.obs[valid], "act": action[valid], "rew": reward[valid],
                             "next_obs": next_obs[valid], "term": terminated[valid],
                             "trunc": truncated[valid] & ~terminated[valid],
                             "env": np.flatnonzero(valid).astype(np.int32)})
            self.last_row[valid] = np.arange(self.buffer.count - n_valid, self.buffer.count)
            if self.starts is not None:
                for i, row in zip(np.flatnonzero(valid), self.last_row[valid], strict=True):
                    if self.pending[i] is not None:
                        self.starts.add(int(row), self.pending[i])
                        self.pending[i] = None
        if self.starts is not None and not valid.all():
            # These copies were reset by this step (NEXT_STEP autoreset): their new episode starts here.
            states = _reset_states(self.envs)
            for i in np.flatnonzero(~valid):
                self.pending[i] = states[i]
        self.ep_return += np.where(valid, reward, 0.0)
        self.done = np.asarray(terminated) | np.asarray(truncated)
        for i in np.flatnonzero(self.done & valid):
            self.finished.append(float(self.ep_return[i]))
            self.ep_return[i] = 0.0
        self.obs = next_obs
        return n_valid


def _reset_states(envs) -> list[np.ndarray]:
    """The full simulator state (qpos, qvel) of every copy (MuJoCo envs' ``state_vector``)."""
    return [np.asarray(v, dtype=np.float64).copy() for v in envs.call("state_vector")]


class _Run:
    """A SAC run in progress: the agent and its update runner, the buffer and the env side, the step and the
    updates owed, and the run directory's logs and checkpoints."""

    def __init__(self, cfg: SACConfig, out: Path, envs, record_starts: bool, device: torch.device,
                 resume: bool) -> None:
        self.cfg, self.out, self.device = cfg, out, device
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        act_dim = int(np.prod(envs.single_action_space.shape))
        low = envs.single_action_space.low.astype(np.float32)
        high = envs.single_action_space.high.astype(np.float32)
        self.agent = SACAgent(cfg, obs_dim, act_dim, low, high, device)
        staged = 0 if cfg.readable_loop else cfg.transfer_every + cfg.num_envs - 1
        self.buffer = ReplayBuffer(cfg.total_steps + cfg.num_envs, obs_dim, act_dim, device, stage_rows=staged)
        self.starts = EpisodeStarts()
        self.envs = _Collector(envs, cfg.num_envs, self.buffer, self.starts if record_starts else None)
        self.metrics, self.checkpoints = JsonlLog(out / METRICS), JsonlLog(out / CHECKPOINTS)
        self.step, self.owed = 0, 0.0
        self.metric_sum, self.metric_n = torch.zeros(len(METRIC_NAMES), device=device), 0
        # The steps at which every env copy was reset with seeds from the step: 0, and each resume from the
        # full state (which cuts the episodes in progress). None: unknown (a run from before they were kept),
        # and the small files cannot be written.
        self.reset_steps: list[int] | None = [0]
        small = resume and (out / RESUME).exists() and (
            not (out / STATE).exists() or _saved_step(out / RESUME) >= _saved_step(out / STATE))
        if small:
            self._restore_small()  # the envs continue where they were: no reset
        else:
            if resume:
                self._restore()
            else:
                out.mkdir(parents=True, exist_ok=True)
                write_json(out / CONFIG, asdict(cfg))
            self._reset_envs(self.step)
        (out / ACTORS).mkdir(exist_ok=True)
        self.runner = update_runner(self.agent, self.buffer, cfg.batch_size, compile=cfg.compile,
                                    cuda_graph=cfg.cuda_graph)
        self.act_step = torch.zeros((), dtype=torch.int64, device=device)
        # The staged loop's host ends of the per-step transfers (pinned on CUDA, so that they are asynchronous).
        pin = device.type == "cuda"
        self.obs_host = torch.zeros(cfg.num_envs, obs_dim, pin_memory=pin)
        self.act_host = torch.zeros(cfg.num_envs, act_dim, pin_memory=pin)
        self.act_ready = torch.cuda.Event() if pin else None
        self.pending = (self.step, self.step)  # overlap: the env steps whose updates are not launched yet

    def _reset_envs(self, step: int) -> None:
        """Reset every copy with seeds derived from ``step`` (so that a run resumed from the full state does
        not replay the episodes it began with)."""
        n = self.cfg.num_envs
        self.envs.reset([self.cfg.seed * 1_000_003 + step * n + i for i in range(n)])

    def _restore_small(self) -> None:
        """Resume from the small files: the networks, optimizers and counters, and the buffer, episode starts
        and env copies rebuilt by re-simulating every recorded action from the run's first reset (MuJoCo and
        gymnasium's reset noise are deterministic), so that the run goes on exactly as if never stopped."""
        state, meta = load_checkpoint(self.out / RESUME, self.device)
        self.agent.load_full_state_dict(state)
        self.step, self.owed = int(meta["step"]), float(meta["owed_updates"])
        self.metric_sum.copy_(state["loop.metric_sum"])
        self.metric_n = int(meta["metric_n"])
        self.reset_steps = [int(s) for s in meta["reset_steps"]]
        rows = int(meta["rows"])
        record, written = load_checkpoint(self.out / ACTIONS)
        if int(record["act"].shape[0]) < rows:
            raise SACError(f"{self.out / ACTIONS} holds {record['act'].shape[0]} actions, the state needs {rows}")
        self._resimulate({"act": record["act"][:rows].numpy(), "env": record["env"][:rows].numpy(),
                          "rew_sums": record["rew_sums"].numpy()}, same_rows=int(written["rows"]) == rows)
        self.envs.finished = [float(r) for r in meta["finished"]]
        for log in (self.metrics, self.checkpoints):
            log.truncate_after(self.step)

    def _resimulate(self, record: dict[str, np.ndarray], same_rows: bool) -> None:
        """Step the env copies through the recorded actions from step 0 (resets where the run reset them),
        storing the transitions again; stop at the first one that differs from the record."""
        envs, n, row, step = self.envs, self.cfg.num_envs, 0, 0
        act_dim = record["act"].shape[1]
        while step < self.step:
            if step in self.reset_steps:
                if step > 0:  # a resume from the full state cut the episodes in progress here
                    self.buffer.commit()
                    open_rows = envs.last_row[(envs.last_row >= 0) & ~envs.done]
                    self.buffer.data["trunc"][torch.as_tensor(open_rows)] = True
                    envs.done[:] = False
                    envs.ep_return[:] = 0.0
                self._reset_envs(step)
            valid = ~envs.done
            k = int(valid.sum())
            action = np.zeros((n, act_dim), dtype=np.float32)  # (the copies being reset ignore theirs)
            action[valid] = record["act"][row:row + k]
            if not np.array_equal(record["env"][row:row + k], np.flatnonzero(valid)):
                raise SACError("re-simulating the recorded actions did not reproduce the run (the episodes "
                               f"ending before row {row} differ)")
            step += envs.step(action)
            self.buffer.commit()
            row += k
        self.buffer.commit()
        sums = _block_sums(self.buffer.data["rew"][:row].cpu().numpy())
        # (A record newer than the state: its last block may hold more rows than the state's.)
        full = len(sums) if same_rows else row // REWARD_BLOCK
        bad = np.flatnonzero(sums[:full] != record["rew_sums"][:full])
        if step != self.step or len(bad):
            where = f"in rows {bad[0] * REWARD_BLOCK}.." if len(bad) else f"step {step} for {self.step}"
            raise SACError(f"re-simulating the recorded actions did not reproduce the run ({where}); a full state "
                           f"({STATE}) resumes without them once {RESUME} is removed")

    def _restore(self) -> None:
        state, meta = load_checkpoint(self.out / STATE, self.device)
        self.agent.load_full_state_dict(state)
        self.buffer.load(state)
        self.starts.load(state)
        self.step, self.owed = int(meta["step"]), float(meta["owed_updates"])
        last_row = np.asarray(meta["last_row"], dtype=np.int64)
        open_rows = last_row[(last_row >= 0) & np.asarray(meta["open"], dtype=bool)]
        # Episodes in progress at the checkpoint end here (the simulator state is lost): a timeout.
        self.buffer.data["trunc"][torch.as_tensor(open_rows)] = True
        self.envs.last_row = last_row
        known = meta.get("reset_steps")
        self.reset_steps = None if known is None else [*known, self.step]
        for log in (self.metrics, self.checkpoints):
            log.truncate_after(self.step)

    def loop(self, end: int, evaluator: Evaluator, deadline: float | None,
             progress: Callable[[int, int], None] | None) -> None:
        """Collect and learn until step ``end`` or the deadline, with metric records and checkpoints."""
        cfg = self.cfg
        next_log = (self.step // cfg.log_every + 1) * cfg.log_every
        next_ckpt = (self.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        rate, saved_at, first = (time.time(), self.step), self.step, self.step
        while self.step < end and (deadline is None or time.time() < deadline):
            prev = self.step
            self.step += self.envs.step(self._next_action())
            if not cfg.readable_loop and self.buffer.staged >= cfg.transfer_every:
                self.buffer.commit()
            if cfg.overlap:
                self.pending = (prev, self.step)  # launched by the next action's call, or by _flush
            else:
                self._learn(prev, self.step)
            self.agent.env_step.fill_(self.step)
            if self.step >= next_log or self.step >= end:
                self._log(rate)
                next_log = (self.step // cfg.log_every + 1) * cfg.log_every
            if self.step >= next_ckpt or self.step >= cfg.total_steps:
                full = (cfg.state_every == 0 or self.step >= cfg.total_steps
                        or self.step // cfg.state_every > saved_at // cfg.state_every)
                self._checkpoint(evaluator, full)
                saved_at = self.step if full else saved_at
                next_ckpt = (self.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
            if progress is not None:
                progress(self.step, cfg.total_steps)
        if self.step < end and saved_at != self.step:  # stopped by the deadline: keep what was reached
            self._checkpoint(evaluator, True)
        elif self.step == first > 0 and not (
                (self.out / STATE).exists() and _saved_step(self.out / STATE) == self.step):
            # A call that ran no step (a finished run, stop_after=0) on a run resumed from the small files:
            # the full state the exports read (the step is a checkpoint's, so nothing is evaluated again).
            self._checkpoint(evaluator, True)
        self._flush()

    def _next_action(self) -> np.ndarray:
        """This env step's actions on the host. Readable and staged loops: the actor after every update owed
        so far. Overlap: the action is computed, then the updates owed by the previous env step are launched,
        and only the action is waited for, so the envs step while the GPU runs those updates."""
        if not self.cfg.overlap:
            action = self._act()
            return action if self.cfg.readable_loop else self._to_host(action)
        action = self._to_host(self._act(), wait=False)
        self._learn(*self.pending)
        self.pending = (self.step, self.step)
        if self.act_ready is not None:
            self.act_ready.synchronize()
        return action.copy()

    def _to_host(self, action: Tensor, wait: bool = True) -> np.ndarray:
        """The staged loop's device-to-host copy of the actions, through pinned memory (an event marks it)."""
        if self.act_ready is None:
            return action.numpy()
        self.act_host.copy_(action, non_blocking=True)
        self.act_ready.record()
        if wait:
            self.act_ready.synchronize()
        return self.act_host.numpy()

    def _flush(self) -> None:
        """What the next checkpoint must hold: the updates owed (overlap) run and every staged row copied."""
        self.buffer.commit()
        self._learn(*self.pending)
        self.pending = (self.step, self.step)

    def _act(self) -> np.ndarray | Tensor:
        """This step's actions: uniform in the action box during the warm-up, then sampled from the policy.
        The readable loop reads them to the host here (numpy); the others get them on the device."""
        agent, n = self.agent, self.cfg.num_envs
        self.act_step.fill_(self.step)  # a kernel argument, not a host-to-device copy
        if self.step < self.cfg.learning_starts:
            u = agent.streams(self.act_step).uniform(S_WARMUP, (n, agent.act_dim))[0]
            action = agent.bias + agent.scale * (2.0 * u - 1.0)
        else:
            with torch.no_grad():
                noise = agent.streams(self.act_step).normal(S_EXPLORE, (n, agent.act_dim))[0]
                action, _ = agent.sample(self._obs_on_device(), noise)
        return action.cpu().numpy() if self.cfg.readable_loop else action

    def _obs_on_device(self) -> Tensor:
        obs = torch.from_numpy(self.envs.obs)
        if self.cfg.readable_loop:
            return obs.to(self.device)
        if self.device.type != "cuda":
            return obs
        self.obs_host.copy_(obs)  # pinned: the copy below is asynchronous (the last one has finished:
        return self.obs_host.to(self.device, non_blocking=True)  # the actions after it were waited for)

    def _learn(self, prev: int, step: int) -> None:
        """One update per transition collected after the warm-up (times updates_per_step)."""
        start = self.cfg.learning_starts
        if step <= start:
            return
        self.owed += (step - max(prev, start)) * self.cfg.updates_per_step
        while self.owed >= 1.0:
            self.metric_sum += self.runner()
            self.metric_n += 1
            self.owed -= 1.0

    def _log(self, rate: tuple[float, int]) -> None:
        t0, start = rate
        record: dict[str, Any] = {"step": self.step, "updates": int(self.agent.update_step),
                                  "steps_per_s": round((self.step - start) / max(time.time() - t0, 1e-9), 1)}
        if self.metric_n:
            # The one host read of the update metrics per log period.
            values = (self.metric_sum / self.metric_n).tolist()
            record.update(zip(METRIC_NAMES, values, strict=True))
            self.metric_sum.zero_()
            self.metric_n = 0
        if self.envs.finished:
            record["train_return"] = float(np.mean(self.envs.finished))
            self.envs.finished.clear()
        self.metrics.append(record)

    def _checkpoint(self, evaluator: Evaluator, full: bool) -> None:
        """The evaluated actor of this step (listed in checkpoints.jsonl) and, if ``full``, the whole state."""
        self._flush()
        agent, step = self.agent, self.step

        def policy(obs: np.ndarray) -> np.ndarray:  # [1, E, obs]
            return agent.act(torch.from_numpy(obs[0]).to(self.device)).cpu().numpy()[None]

        # A deadline stop right after a scheduled checkpoint: evaluated and listed already, only the state is due.
        if not any(r["step"] == step for r in self.checkpoints.read()):
            returns = evaluator.run(policy)[0]
            info = {"step": step, "eval_return": float(returns.mean()), "eval_return_std": float(returns.std()),
                    "updates": int(agent.update_step)}
            name = f"{ACTORS}/step_{step:09d}.safetensors"
            save_checkpoint(self.out / name, agent.actor_tensors(), info)
            # Listed before the state is saved: a resume drops records newer than its state, never the reverse.
            self.checkpoints.append({**info, "path": name})
        if self.reset_steps is not None:
            # The small files, at every checkpoint: the record of actions first (a resume reads the rows that
            # the state names, so a newer record is harmless), then the state.
            rows = self.buffer.size
            env = self.buffer.data["env"][:rows]
            save_checkpoint(self.out / ACTIONS, {
                "act": self.buffer.data["act"][:rows],
                "env": env.to(torch.uint8) if self.cfg.num_envs <= 256 else env,
                "rew_sums": torch.from_numpy(_block_sums(self.buffer.data["rew"][:rows].cpu().numpy()))},
                {"rows": rows})
            save_checkpoint(self.out / RESUME, {**agent.full_state_dict(), "loop.metric_sum": self.metric_sum},
                            {"step": step, "owed_updates": self.owed, "rows": rows, "metric_n": self.metric_n,
                             "finished": self.envs.finished, "reset_steps": self.reset_steps})
        if full:
            save_checkpoint(self.out / STATE, {**agent.full_state_dict(), **self.buffer.state(), **self.starts.state()},
                            {"step": step, "owed_updates": self.owed, "last_row": self.envs.last_row.tolist(),
                             "open": (~self.envs.done).tolist(), "reset_steps": self.reset_steps})
