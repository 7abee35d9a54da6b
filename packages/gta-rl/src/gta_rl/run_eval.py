"""Evaluation during and after a training run: normalized D4RL scores of every stacked member (GTA section
5.1, appendix F), in the foreground, in a background thread, or in worker processes with CPU copies of
the policies.

Episode i of member j starts from env seed ``eval_seed + seeds[j] * E + i`` (E episodes per member), so
every training seed plays its own episodes, as CORL seeds each run's evaluation env with the run's seed,
and a member plays the same episodes whatever it is stacked with. Runs written before this scheme
(``config.json`` without ``eval_seeding``) keep theirs: every member from ``eval_seed + i``.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from gta_data import StoreError, normalized_score
from gta_rl.algorithms import build_agent
from gta_rl.base import Agent
from gta_rl.config import ResolvedRun
from gta_rl.evaluation import Evaluator

EVAL_SEEDING = "per_seed"  # recorded as config.json's "eval_seeding" by runs that use the scheme above


def default_eval_episodes(env_id: str, algorithm: str = "") -> int:
    """Evaluation episodes per seed: 100 for the sparse mazes (PointMaze / maze2d, AntMaze), whose success
    rates are noisy, and for the Decision Transformer (paper Tables 13-14, CORL's DT configs: eval_episodes
    100); 10 for the Q-learning algorithms on locomotion (CORL's n_episodes; GTA paper C.3)."""
    return 100 if "maze" in env_id.lower() or algorithm == "dt" else 10


def env_seeds(run: ResolvedRun, episodes: int) -> list[list[int]]:
    """Env seed of every member's episodes, [S][E] (module docstring)."""
    base = run.config.eval_seed
    if run.eval_seeding != EVAL_SEEDING:
        return [[base + i for i in range(episodes)] for _ in run.seeds]
    return [[base + s * episodes + i for i in range(episodes)] for s in run.seeds]


def make_evaluator(run: ResolvedRun, episodes: int, asynchronous: bool) -> Evaluator:
    """The evaluator of a run: ``episodes`` episodes per seed in copies of its env (env seeds:
    :func:`env_seeds`). ``asynchronous`` (``--eval-async``) shards the copies over worker processes in which
    CPU copies of the policies act (:class:`CpuPolicies`); the Decision Transformer's rollouts act in this
    process."""
    workers_act = asynchronous and run.algorithm != "dt"
    return Evaluator(run.env_id, len(run.seeds), episodes, layout=run.observation_layout,
                     env_seeds=env_seeds(run, episodes), env_kwargs=run.env_kwargs,
                     asynchronous=asynchronous,
                     policy_factory=functools.partial(CpuPolicies, run) if workers_act else None)


class BackgroundEvaluation:
    """Evaluates a copy of the agent in a worker thread while training goes on.

    The paper's protocol evaluates every 5k of 1M updates (200 evaluations of 10 episodes per seed); in
    the foreground, HalfCheetah evaluations took longer on a fast GPU than the updates between them. The
    copy (``shadow``, an agent of the same config) is loaded on the training stream right after the
    evaluated step, so its scores equal a foreground evaluation's; on CUDA the thread runs on its own
    stream and waits only for that copy."""

    def __init__(self, shadow: Agent, evaluator: Evaluator, run: ResolvedRun) -> None:
        self.shadow, self.evaluator, self.run = shadow, evaluator, run
        self.device = shadow.step.device
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.pending: tuple[int, Future] | None = None

    def submit(self, agent: Agent, step: int) -> None:
        if self.pending is not None:
            raise RuntimeError("collect the previous evaluation first")
        self.shadow.load_full_state_dict(agent.full_state_dict())  # device copies, queued after this step
        ready = None
        if self.stream is not None:
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self.device))  # the training device's stream, not cuda:0's
        future: Future = Future()
        threading.Thread(target=self._work, args=(future, ready), name=f"gta-rl-eval-{step}", daemon=True).start()
        self.pending = (step, future)

    def _work(self, future: Future, ready: torch.cuda.Event | None) -> None:
        try:
            if self.stream is None:
                future.set_result(evaluate_agent(self.shadow, self.evaluator, self.run))
                return
            with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
                self.stream.wait_event(ready)
                future.set_result(evaluate_agent(self.shadow, self.evaluator, self.run))
        except BaseException as exc:  # noqa: BLE001 - raised again in the training thread by collect()
            future.set_exception(exc)

    def finished(self) -> bool:
        return self.pending is not None and self.pending[1].done()

    def collect(self) -> tuple[int, dict[str, Any]] | None:
        """(step, scores) of the evaluation out, waiting for it; None if none is out."""
        if self.pending is None:
            return None
        step, future = self.pending
        self.pending = None
        return step, future.result()


def _evaluate_dt(agent, evaluator: Evaluator, run: ResolvedRun) -> dict[str, Any]:
    """One set of rollouts per target return; the first target's scores are the run's headline scores."""
    from gta_rl.dt import resolve_targets

    targets = resolve_targets(agent.cfg)
    per_target: dict[str, dict[str, list]] = {}
    was_training = agent.training
    agent.eval()
    for target in targets:
        policy = agent.rollout(target, evaluator.episodes)
        returns = evaluator.run(policy, observe=policy.observe)  # [S, E]
        scores = normalize_returns(run, returns)
        per_target[f"{target:g}"] = {"return_mean": returns.mean(1).tolist(), "score_mean": scores.mean(1).tolist(),
                                     "returns": returns.tolist(), "scores": scores.tolist()}
    agent.train(was_training)
    return {**per_target[f"{targets[0]:g}"], "targets": per_target}


def evaluate_agent(agent: Agent, evaluator: Evaluator, run: ResolvedRun) -> dict[str, list]:
    """Deterministic rollouts of every seed; returns per-seed returns and normalized scores."""
    if run.algorithm == "dt":
        return _evaluate_dt(agent, evaluator, run)
    if evaluator.policy_factory is not None:  # the policies act in the evaluator's worker processes
        returns = evaluator.rollout({k: v.detach().to("cpu").numpy() for k, v in agent.policy_state().items()})
    else:
        device = agent.step.device

        def policy(obs: np.ndarray) -> np.ndarray:  # [S, E, obs] raw
            x = (torch.as_tensor(obs, device=device) - agent.obs_mean) / agent.obs_std
            return agent.act(x).cpu().numpy()

        was_training = agent.training
        agent.eval()
        returns = evaluator.run(policy)  # [S, E]
        agent.train(was_training)
    scores = normalize_returns(run, returns)
    return {"return_mean": returns.mean(1).tolist(), "score_mean": scores.mean(1).tolist(),
            "returns": returns.tolist(), "scores": scores.tolist()}


class CpuPolicies:
    """A run's policies on the CPU, for evaluation worker processes (``Evaluator(policy_factory=...)``,
    built there as ``functools.partial(CpuPolicies, run)``): loaded from :meth:`Agent.policy_state` as numpy
    arrays at every evaluation. A worker acts with the networks of the seeds its env copies belong to
    only (a one-seed slice of the stacked weights where it serves one seed: at these sizes reading the
    weights is the cost of a CPU forward pass). The actions are those of the run's networks and precision
    (``bf16`` included) computed by the CPU, so they can differ from the training device's by rounding."""

    def __init__(self, run: ResolvedRun) -> None:
        torch.set_num_threads(1)  # one core per worker process (and no OpenMP pool in a forked child)
        self.run = run
        self._state: dict[str, np.ndarray] = {}
        self._agents: dict[tuple[int, ...], Agent] = {}  # seed positions -> their policies
        self._layout: tuple | None = None  # (rows, seed positions, row -> (policy, slot) index, batch shape)

    def load(self, state: dict[str, np.ndarray]) -> None:
        self._state = state
        for positions, agent in self._agents.items():
            self._fill(agent, positions)

    def _fill(self, agent: Agent, positions: tuple[int, ...]) -> None:
        own, index = agent.state_dict(), list(positions)
        with torch.no_grad():
            for key, value in self._state.items():
                value = torch.from_numpy(value)
                if key in ("obs_mean", "obs_std"):  # shared [obs], or per member [S, 1, obs] (stacked arms)
                    setattr(agent, key, value.clone() if value.ndim == 1 else value[index].clone())
                else:  # stacked per seed [S, ...]
                    own[key].copy_(value[index])

    def _agent(self, positions: tuple[int, ...]) -> Agent:
        if positions not in self._agents:
            run = self.run.with_seeds([self.run.seeds[i] for i in positions])
            agent = agent_with_stats(run, torch.device("cpu")).eval()
            self._fill(agent, positions)
            self._agents[positions] = agent
        return self._agents[positions]

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Actions [N, act] for raw observations [N, obs], observation i acted on by policy ``rows[i]``."""
        rows = np.asarray(rows)
        key = rows.tobytes()
        if self._layout is None or self._layout[0] != key:  # the same rows at every step of a rollout
            positions, local = np.unique(rows, return_inverse=True)
            # Row i goes to slot i' of its policy's batch (its rank among that policy's rows): [S', rows per policy]
            order = np.argsort(local, kind="stable")
            counts = np.bincount(local, minlength=len(positions))
            slots = np.empty(len(local), dtype=np.int64)
            slots[order] = np.arange(len(local)) - np.repeat(np.cumsum(counts) - counts, counts)
            index = (torch.from_numpy(local.astype(np.int64)), torch.from_numpy(slots))
            self._layout = (key, tuple(int(p) for p in positions), index, (len(positions), int(counts.max())))
        _, positions, index, shape = self._layout
        agent = self._agent(positions)
        x = torch.zeros(*shape, obs.shape[1])
        x[index] = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))
        actions = agent.act((x - agent.obs_mean) / agent.obs_std)
        return actions[index].numpy()


def normalize_returns(run: ResolvedRun, returns: np.ndarray) -> np.ndarray:
    """100 (R - R_min) / (R_max - R_min) from the run's reference scores, else gta-data's table by env (NaN
    where neither has the env)."""
    if run.ref_scores:
        lo, hi = run.ref_scores
        return 100.0 * (returns - lo) / (hi - lo)
    try:
        return np.asarray(normalized_score(run.env_id, returns))
    except StoreError:
        return np.full_like(returns, np.nan)


def agent_with_stats(run: ResolvedRun, device: torch.device) -> Agent:
    """:func:`build_agent` with the observation statistics registered (zeros and ones: to be loaded)."""
    agent = build_agent(run, device)
    agent.register_buffer("obs_mean", torch.zeros(run.obs_dim, device=device))
    agent.register_buffer("obs_std", torch.ones(run.obs_dim, device=device))
    return agent


