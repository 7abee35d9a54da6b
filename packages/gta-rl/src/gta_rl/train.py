"""Offline RL training runs: GTA's stage C (paper section 4.4; protocol of section 5.1 and appendix F).

One run trains S seeds of one algorithm at once on the union of one or more stores (original first,
then augmented), evaluates every ``eval_every`` steps, and keeps a self-describing run directory:

    out/config.json               resolved run + algorithm config, env, dims, max_action
    out/checkpoint.safetensors    every seed's networks, targets, optimizer moments, step, state stats
    out/seed_<k>/metrics.jsonl    append-only per-seed log: train metrics and evaluations
    out/results.json              final and best normalized score of every seed (written at the end)

Resume is exact: the random streams depend only on (seed, step), and the checkpoint holds all state
(and ``pending_eval``, the step whose background evaluation had not finished when it was written: a
resume evaluates that step again).
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gta_data import StoreError, normalized_score
from gta_rl import fused_mlp
from gta_rl.algorithms import (
    ConfigError,
    build_config,
    canonical_name,
    config_to_dict,
    get_spec,
    match_preset,
)
from gta_rl.base import Agent, resolve_device
from gta_rl.buffer import RewardTransform, load_training_data
from gta_rl.checkpoint import load_checkpoint, save_checkpoint, write_json
from gta_rl.evaluation import Evaluator, action_bound, check_env_matches
from gta_rl.fast import MetricAccumulator, StepRunner
from gta_rl.nets import fused_mlp_networks, set_fused_mlp

CHECKPOINT = "checkpoint.safetensors"


class RunError(ValueError):
    """A run that cannot start or resume (one-line message)."""


@dataclass(frozen=True)
class RunConfig:
    algorithm: str  # td3bc | iql | cql | mcq | dt
    data: tuple[str, ...]  # store paths; the first is the original dataset
    seeds: tuple[int, ...]  # trained together, stacked
    steps: int = 1_000_000  # gradient steps per seed (CORL, GTA: 1M)
    batch_size: int = 1024  # GTA appendix: 1024 for every Q-learning method
    eval_every: int = 5000  # CORL eval_freq
    eval_episodes: int | None = None  # None: 100 for mazes, 10 otherwise (CORL; paper C.3); 0: no evaluation
    log_every: int = 1000  # train metrics are reduced on the device and written every N steps
    checkpoint_every: int = 0  # 0: at every evaluation
    mix_ratio: float | None = None  # fraction of each batch from the first store; None = uniform union
    device: str = "auto"
    compile: bool = False
    cuda_graph: bool = False
    tf32: bool = False  # TF32 tensor-core matmuls on CUDA (10-bit mantissa inputs, fp32 accumulation)
    fullgraph: bool = False  # compile the whole step as one graph, gradients included (implies compile)
    bf16: bool = False  # bf16 mixed precision: hidden-layer matmuls in bf16 (fp32 outputs, losses, Adam)
    fused_mlp: bool = False  # every pass of the 256-256 networks through Triton kernels (CUDA, bf16; fused_mlp.py)
    preset: str | None = "auto"  # per-family settings ('auto' matches the store's dataset name)
    overrides: dict[str, Any] = field(default_factory=dict)
    eval_seed: int = 0  # env seed of evaluation episode 0
    eval_async: bool = False  # evaluation envs sharded over worker processes
    eval_overlap: bool = True  # evaluate a copy of the agent in a background thread while training goes on


def _dataset_name(store) -> str:
    """Text the presets are matched against: string provenance (dataset ids, D4RL names), path, env."""
    prov = [str(v) for v in store.provenance.values() if isinstance(v, str)]
    return " ".join([*prov, store.path.name, store.env_id])


def default_eval_episodes(env_id: str) -> int:
    """Evaluation episodes per seed: 100 for the sparse mazes (PointMaze / maze2d, AntMaze), whose success
    rates are noisy, 10 for locomotion (CORL's n_episodes; GTA paper C.3)."""
    return 100 if "maze" in env_id.lower() else 10


def _check(cfg: RunConfig) -> None:
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise RunError("steps and batch size must be positive")
    if cfg.eval_every < 0 or (cfg.eval_episodes is not None and cfg.eval_episodes < 0) or cfg.log_every < 1:
        raise RunError("eval_every and eval_episodes must be >= 0 and log_every >= 1")
    if cfg.checkpoint_every < 0:
        raise RunError(f"checkpoint_every must be >= 0 (0: at every evaluation), got {cfg.checkpoint_every}")
    if not cfg.seeds:
        raise RunError("no seeds")


def build_agent(run: dict[str, Any], device: torch.device) -> Agent:
    spec = get_spec(run["algorithm"])
    algo_cfg = build_config(run["algorithm"], None, run["algorithm_config"], check_ranges=False)
    agent = spec.agent(algo_cfg, run["obs_dim"], run["act_dim"], run["seeds"], max_action=run["max_action"],
                       device=device, total_steps=run["steps"])
    agent.set_matmul_dtype(torch.bfloat16 if run.get("bf16") else None)  # runs written before --bf16 have none
    if run.get("fused_mlp") and device.type == "cuda":  # CPU copies (evaluation workers) keep the ordinary path
        set_fused_mlp(agent, True)
    return agent


def _is_run_dir(out: Path) -> bool:
    """Whether ``out`` holds a gta-rl run (its config.json names an algorithm and the training stores)."""
    try:
        config = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "algorithm" in config and "seeds" in config and "data" in config


def _clear_unstarted_run(out: Path) -> None:
    """Remove what a run that never reached its first checkpoint wrote (its logs and config), nothing else."""
    for log in out.glob("seed_*/metrics.jsonl"):
        log.unlink()
    for name in ("results.json", "config.json"):
        (out / name).unlink(missing_ok=True)


class _SeedLogs:
    def __init__(self, out: Path, seeds: list[int]) -> None:
        self.paths = {s: out / f"seed_{s}" / "metrics.jsonl" for s in seeds}
        for p in self.paths.values():
            p.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int, drop_evals_at: int | None = None) -> None:
        """Drop records written after the checkpoint we resume from, and the evaluation of step
        ``drop_evals_at`` (one that ran in the background when the checkpoint was written): they will be
        written again."""
        for p in self.paths.values():
            if p.exists():
                records = [(line, json.loads(line)) for line in p.read_text().splitlines() if line]
                keep = [line for line, r in records if r["step"] <= step
                        and not (r["kind"] == "eval" and r["step"] == drop_evals_at)]
                p.write_text("".join(line + "\n" for line in keep))

    def write(self, per_seed: dict[int, dict[str, Any]]) -> None:
        for seed, record in per_seed.items():
            with self.paths[seed].open("a") as f:
                f.write(json.dumps(record) + "\n")


def train(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run; returns the results document. ``stop_after`` ends the call after that
    many steps of this call (tests use it to simulate an interruption)."""
    _check(cfg)
    out = Path(out)
    algorithm = canonical_name(cfg.algorithm)
    device = resolve_device(cfg.device, RunError)
    if cfg.cuda_graph and device.type != "cuda":
        raise RunError("--cuda-graph needs a CUDA device")
    if cfg.fullgraph and algorithm == "dt":
        raise RunError("--fullgraph is for the Q-learning algorithms; the DT's fast path compiles its forward (--compile)")
    if cfg.fused_mlp:
        if device.type != "cuda" or not fused_mlp.available():
            raise RunError("--fused-mlp needs a CUDA device and Triton (which torch's CUDA builds bring)")
        if algorithm == "dt":
            raise RunError("--fused-mlp is for the Q-learning algorithms' MLPs, not dt")
        if not cfg.bf16:
            raise RunError("--fused-mlp runs the --bf16 arithmetic of the networks in one kernel: add --bf16")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    ckpt_path = out / CHECKPOINT
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a run directory")
    if ckpt_path.exists() and not resume:
        raise RunError(f"{out} already holds a run (pass --resume to continue it, or choose another --out)")
    if resume and not ckpt_path.exists():
        raise RunError(f"nothing to resume in {out} (no {CHECKPOINT}; without --resume a run that never reached "
                       "its first checkpoint starts again)")
    restart = False
    if not resume and out.exists() and any(out.iterdir()):
        if not _is_run_dir(out):
            raise RunError(f"{out} is not empty and holds no gta-rl run: choose another --out")
        if (out / "results.json").exists():
            raise RunError(f"{out} holds a finished run (results.json, no checkpoint): choose another --out")
        restart = True  # an earlier start that never reached its first checkpoint: cleared once this one is valid

    data_cfg = get_spec(algorithm)  # validates the name before any data is read
    del data_cfg
    stores_probe = [str(Path(p)) for p in cfg.data]
    from gta_rl.buffer import open_stores

    stores = open_stores(stores_probe)
    saved = json.loads((out / "config.json").read_text()) if resume else None
    if saved is not None and cfg.preset == "auto" and not cfg.overrides and "algorithm_config" in saved:
        # A resume without --preset/--set continues with the settings the run started with, even where the
        # presets have changed since.
        preset = saved.get("preset")
        cfg = replace(cfg, overrides=dict(saved.get("overrides") or {}))
        algo_cfg = build_config(algorithm, None, saved["algorithm_config"], check_ranges=False)
    else:
        preset = cfg.preset
        if preset == "auto":
            preset = match_preset(algorithm, _dataset_name(stores[0]))
        algo_cfg = build_config(algorithm, preset, cfg.overrides)
    if algorithm == "dt":
        data, stores = _load_dt_data(algo_cfg, stores_probe, device, cfg.mix_ratio)
    else:
        reward = RewardTransform(algo_cfg.reward_scale, algo_cfg.reward_bias, algo_cfg.normalize_reward)
        data, stores = load_training_data(stores_probe, device=device, reward_transform=reward,
                                          mix_ratio=cfg.mix_ratio)
    env_id = stores[0].env_id
    if cfg.eval_episodes is None:  # recorded in config.json as the number; a resumed run keeps its own
        recorded = saved.get("eval_episodes") if saved is not None else None
        cfg = replace(cfg, eval_episodes=default_eval_episodes(env_id) if recorded is None else int(recorded))
    env_kwargs = dict(stores[0].attrs.get("env_kwargs") or {})
    try:
        max_action = action_bound(env_id, env_kwargs)
    except (ValueError, ImportError):
        max_action = math.ceil(data.max_abs_action * 100) / 100  # no env here: the data's bound
    run = {
        "algorithm": algorithm,
        "algorithm_config": config_to_dict(algo_cfg),
        "preset": preset,
        **{k: v for k, v in asdict(cfg).items() if k not in ("algorithm", "preset")},
        "data": stores_probe,
        "seeds": list(cfg.seeds),
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "obs_dim": data.obs_dim,
        "act_dim": data.act_dim,
        "max_action": max_action,
        "ref_scores": list(stores[0].ref_scores) if stores[0].ref_scores else None,
        "observation_layout": stores[0].attrs.get("observation_layout"),
        "num_transitions": data.sizes,
        "reward_factor": data.reward_factor,
    }

    def new_agent() -> Agent:
        agent = build_agent(run, device)
        agent.register_buffer("obs_mean", torch.as_tensor(data.obs_mean, device=device))
        agent.register_buffer("obs_std", torch.as_tensor(data.obs_std, device=device))
        return agent

    agent = new_agent()  # before anything is written: the fused-kernel check below reads its networks
    if cfg.fused_mlp and not fused_mlp_networks(agent):
        raise RunError(f"--fused-mlp: none of {algorithm}'s networks has the kernel's shape (two hidden layers of "
                       f"{fused_mlp.HIDDEN}); drop the flag")
    if cfg.eval_episodes > 0:  # before anything is written: an env the store does not fit fails the run up front
        check_env_matches(env_id, env_kwargs, run["observation_layout"], data.obs_dim)
    if restart:
        _clear_unstarted_run(out)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        old = saved
        free = ("steps", "device", "compile", "cuda_graph", "tf32", "bf16", "fused_mlp", "fullgraph", "eval_async",
                "eval_overlap")
        differs = [k for k in run if k not in free and old.get(k) != run[k]]
        if differs:
            raise RunError(f"cannot resume {out}: the config differs in {', '.join(differs)}")
        # written again when the run reaches its (possibly new) last step; until then it is unfinished
        (out / "results.json").unlink(missing_ok=True)
    write_json(out / "config.json", run)
    logs = _SeedLogs(out, list(cfg.seeds))
    history: dict[str, Any] = {"evals": []}
    start, pending_at_start = 0, None
    if resume:
        state, meta = load_checkpoint(ckpt_path, device)
        agent.load_full_state_dict(state)
        start = int(meta["step"])
        history = meta["history"]
        # A checkpoint written while its step's evaluation ran in the background: evaluate that step again.
        pending_at_start = meta.get("pending_eval")
        logs.truncate_after(start, drop_evals_at=pending_at_start)

    compile_step = cfg.compile
    if algorithm == "dt" and cfg.compile:
        agent.compile_forward()  # the DT fast path compiles the transformer's forward only
        compile_step = False
    runner = StepRunner(agent, data, cfg.batch_size, compile=compile_step, cuda_graph=cfg.cuda_graph,
                        fullgraph=cfg.fullgraph)
    acc = MetricAccumulator()
    ckpt_every = cfg.checkpoint_every or cfg.eval_every or cfg.steps
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    evaluator = background = None

    def record_eval(step: int, scores: dict[str, Any]) -> None:
        entry = {"step": step, "scores": scores["score_mean"]}
        if "targets" in scores:
            entry["targets"] = {t: v["score_mean"] for t, v in scores["targets"].items()}
        history["evals"].append(entry)
        logs.write({s: {"step": step, "kind": "eval", "return_mean": scores["return_mean"][i],
                        "score_mean": scores["score_mean"][i], "scores": scores["scores"][i],
                        **({"targets": {t: {"return_mean": v["return_mean"][i], "score_mean": v["score_mean"][i]}
                                        for t, v in scores["targets"].items()}} if "targets" in scores else {})}
                    for i, s in enumerate(cfg.seeds)})

    def collect(wait: bool = True) -> None:
        """Record the background evaluation if one is out (``wait=False``: only if it has finished)."""
        if background is not None and (wait or background.finished()):
            done_eval = background.collect()
            if done_eval is not None:
                record_eval(*done_eval)

    t0, t_last, last_step = time.perf_counter(), time.perf_counter(), start
    try:
        if cfg.eval_episodes > 0:
            evaluator = make_evaluator(run, cfg.eval_episodes, cfg.eval_async)
            if cfg.eval_overlap and algorithm != "dt":  # the DT's rollouts keep context state
                background = _BackgroundEvaluation(new_agent(), evaluator, run)
            if pending_at_start == start:
                record_eval(start, evaluate_agent(agent, evaluator, run))
        for step in range(start, end):
            acc.add(runner(step))
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                means = acc.pop()
                now = time.perf_counter()
                rate = (done - last_step) / max(now - t_last, 1e-9)
                t_last, last_step = now, done
                logs.write({s: {"step": done, "kind": "train", "updates_per_s": rate,
                                **{k: v[i] for k, v in means.items()}} for i, s in enumerate(cfg.seeds)})
                collect(wait=False)  # a finished background evaluation is logged without waiting for the next
            pending = None
            if evaluator is not None and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
                collect()
                # In the background unless nothing is left to overlap with, or a CUDA graph is still to be
                # captured (a capture would record the evaluation's kernels too).
                if background is not None and done < end and runner.captured:
                    background.submit(agent, done)
                    pending = done
                else:
                    record_eval(done, evaluate_agent(agent, evaluator, run))
            if done % ckpt_every == 0 or done == cfg.steps:
                if pending is None:
                    collect()  # the checkpoint holds every evaluation up to its step
                # else: written now without this step's evaluation; a resume from it evaluates the step again
                save_checkpoint(ckpt_path, agent.full_state_dict(),
                                {"step": done, "history": history, "pending_eval": pending})
            if progress is not None:
                progress(done, cfg.steps)
        collect()
    finally:
        if evaluator is not None:
            evaluator.close()
    results = summarize_history(run, history, end)
    results["wall_s_this_call"] = time.perf_counter() - t0
    if end == cfg.steps:
        write_json(out / "results.json", results)
    return results


def make_evaluator(run: dict[str, Any], episodes: int, asynchronous: bool) -> Evaluator:
    """The evaluator of a run: ``episodes`` episodes per seed in copies of its env from env seed ``eval_seed``
    on. ``asynchronous`` (``--eval-async``) shards the copies over worker processes in which CPU copies of the
    policies act (:class:`CpuPolicies`); the Decision Transformer's rollouts act in this process."""
    workers_act = asynchronous and run["algorithm"] != "dt"
    return Evaluator(run["env_id"], len(run["seeds"]), episodes, layout=run.get("observation_layout"),
                     seed_base=run.get("eval_seed", 0), env_kwargs=run.get("env_kwargs"), asynchronous=asynchronous,
                     policy_factory=functools.partial(CpuPolicies, run) if workers_act else None)


class _BackgroundEvaluation:
    """Evaluates a copy of the agent in a worker thread while training goes on.

    The paper's protocol evaluates every 5k of 1M updates (200 evaluations of 10 episodes per seed); in
    the foreground, on an H100, HalfCheetah evaluations took longer than the updates between them. The
    copy (``shadow``, an agent of the same config) is loaded on the training stream right after the
    evaluated step, so its scores equal a foreground evaluation's; on CUDA the thread runs on its own
    stream and waits only for that copy."""

    def __init__(self, shadow: Agent, evaluator: Evaluator, run: dict[str, Any]) -> None:
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


def _load_dt_data(algo_cfg, paths: list[str], device: torch.device, mix_ratio: float | None):
    """Sequence data of the Decision Transformer, checked against its config before anything is written."""
    from gta_rl.dt import resolve_targets
    from gta_rl.sequences import load_sequence_data

    try:
        resolve_targets(algo_cfg)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    data, stores = load_sequence_data(paths, context=algo_cfg.context, return_scale=algo_cfg.return_scale,
                                      device=device, mix_ratio=mix_ratio)
    limit = algo_cfg.episode_len + algo_cfg.context
    if data.max_timestep >= limit:
        raise RunError(f"the data has timestep {data.max_timestep}, beyond the timestep embedding "
                       f"(episode_len + context = {limit}); pass --set episode_len=N")
    return data, stores


def _evaluate_dt(agent, evaluator: Evaluator, run: dict[str, Any]) -> dict[str, Any]:
    """One set of rollouts per target return; the first target's scores are the run's headline scores."""
    from gta_rl.dt import resolve_targets

    targets = resolve_targets(agent.cfg)
    per_target: dict[str, dict[str, list]] = {}
    was_training = agent.training
    agent.eval()
    for target in targets:
        policy = agent.rollout(target, evaluator.episodes)
        returns = evaluator.run(policy, observe=policy.observe)  # [S, E]
        scores = _normalize(run, returns)
        per_target[f"{target:g}"] = {"return_mean": returns.mean(1).tolist(), "score_mean": scores.mean(1).tolist(),
                                     "returns": returns.tolist(), "scores": scores.tolist()}
    agent.train(was_training)
    return {**per_target[f"{targets[0]:g}"], "targets": per_target}


def evaluate_agent(agent: Agent, evaluator: Evaluator, run: dict[str, Any]) -> dict[str, list]:
    """Deterministic rollouts of every seed; returns per-seed returns and normalized scores."""
    if run["algorithm"] == "dt":
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
    scores = _normalize(run, returns)
    return {"return_mean": returns.mean(1).tolist(), "score_mean": scores.mean(1).tolist(),
            "returns": returns.tolist(), "scores": scores.tolist()}


class CpuPolicies:
    """A run's policies on the CPU, for evaluation worker processes (``Evaluator(policy_factory=...)``,
    built there as ``functools.partial(CpuPolicies, run)``): loaded from :meth:`Agent.policy_state` as numpy
    arrays at every evaluation. A worker acts with the networks of the seeds its env copies belong to
    only (a one-seed slice of the stacked weights where it serves one seed: at these sizes reading the
    weights is the cost of a CPU forward pass). The actions are those of the run's networks and precision
    (``bf16`` included) computed by the CPU, so they can differ from the training device's by rounding."""

    def __init__(self, run: dict[str, Any]) -> None:
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
                # stacked per seed ([S, ...]) unless it is one of the shared observation statistics
                own[key].copy_(value if key in ("obs_mean", "obs_std") else value[index])

    def _agent(self, positions: tuple[int, ...]) -> Agent:
        if positions not in self._agents:
            run = {**self.run, "seeds": [self.run["seeds"][i] for i in positions]}
            agent = _agent_with_stats(run, torch.device("cpu")).eval()
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


def _normalize(run: dict[str, Any], returns: np.ndarray) -> np.ndarray:
    if run.get("ref_scores"):
        lo, hi = run["ref_scores"]
        return 100.0 * (returns - lo) / (hi - lo)
    try:
        return np.asarray(normalized_score(run["env_id"], returns))
    except StoreError:
        return np.full_like(returns, np.nan)


def summarize_history(run: dict[str, Any], history: dict[str, Any], step: int) -> dict[str, Any]:
    evals = history["evals"]
    per_seed = {}
    for i, seed in enumerate(run["seeds"]):
        scores = [e["scores"][i] for e in evals]
        per_seed[str(seed)] = {
            "final_score": scores[-1] if scores else None,
            "best_score": max(scores) if scores else None,
            "best_step": evals[int(np.argmax(scores))]["step"] if scores else None,
        }
        if evals and "targets" in evals[-1]:  # Decision Transformer: the final score of every target
            per_seed[str(seed)]["final_by_target"] = {t: v[i] for t, v in evals[-1]["targets"].items()}
    return {"algorithm": run["algorithm"], "env_id": run["env_id"], "data": run["data"], "step": step,
            "seeds": per_seed}


def _agent_with_stats(run: dict[str, Any], device: torch.device) -> Agent:
    """:func:`build_agent` with the observation statistics registered (zeros and ones: to be loaded)."""
    agent = build_agent(run, device)
    agent.register_buffer("obs_mean", torch.zeros(run["obs_dim"], device=device))
    agent.register_buffer("obs_std", torch.ones(run["obs_dim"], device=device))
    return agent


def load_run(out: str | Path, device: str = "auto") -> tuple[dict[str, Any], Agent, dict]:
    """The run's config and its agent restored from the checkpoint."""
    out = Path(out)
    if not (out / "config.json").exists() or not (out / CHECKPOINT).exists():
        raise RunError(f"{out} is not a gta-rl run directory (config.json and {CHECKPOINT} expected)")
    run = json.loads((out / "config.json").read_text())
    dev = resolve_device(device, RunError)
    try:
        agent = _agent_with_stats(run, dev)
    except ConfigError as exc:
        raise RunError(f"{out}: {exc}") from None
    state, meta = load_checkpoint(out / CHECKPOINT, dev)
    agent.load_full_state_dict(state)
    return run, agent, meta
