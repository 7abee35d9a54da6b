"""Offline RL training runs: GTA's stage C (paper section 4.4; protocol of section 5.1 and appendix F).

One run trains S seeds of one algorithm at once on the union of one or more stores (original first,
then augmented), evaluates every ``eval_every`` steps, and keeps a self-describing run directory
(:mod:`gta_rl.run_dir`). Runs that differ only in their data -- the "arms" of a comparison: the original
data, original + GTA, original + S4RL, SynthER's samples -- train together as one stacked agent
(:func:`train_arms`): each member draws its batches from its own arm's data
(:class:`gta_rl.buffer.StackedData`) and each arm writes its own run directory, as it would alone.

Resume is exact: the random streams depend only on (seed, step), and the checkpoint holds all state
(and ``pending_eval``, the step whose background evaluation had not finished when it was written: a
resume evaluates that step again).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from gta_data.metric_sinks import MetricSinks, SinkError, parse_sinks
from gta_data.stop import StopSignals
from gta_rl import fused_mlp
from gta_rl.algorithms import (
    build_agent,
    build_config,
    canonical_name,
    config_to_dict,
    match_preset,
)
from gta_rl.base import Agent, resolve_device
from gta_rl.buffer import RewardTransform, StackedData, load_training_data, open_stores
from gta_rl.checkpoint import load_checkpoint, save_checkpoint, write_json
from gta_rl.evaluation import action_bound, check_env_matches
from gta_rl.fast import MetricAccumulator, StepRunner
from gta_rl.nets import fused_mlp_networks
from gta_rl.run_dir import (
    CHECKPOINT,
    RunError,
    RunStopped,
    SeedLogs,
    check_out_dir,
    clear_unstarted_run,
    load_run,
    read_config,
    summarize_history,
)
from gta_rl.run_eval import (
    EVAL_SEEDING,
    BackgroundEvaluation,
    CpuPolicies,
    default_eval_episodes,
    evaluate_agent,
    make_evaluator,
)

__all__ = ["CHECKPOINT", "CpuPolicies", "RunConfig", "RunError", "RunStopped", "default_eval_episodes",
           "evaluate_agent", "load_run", "make_evaluator", "train", "train_arms"]

# Settings a resume may change: they change how fast the run goes, not what it computes.
_FREE_ON_RESUME = ("steps", "device", "compile", "cuda_graph", "tf32", "bf16", "fused_mlp", "fullgraph",
                   "eval_async", "eval_overlap", "arm", "arms", "log_to")
# What every arm of a stack must share: one agent config, one evaluation.
_ARMS_AGREE_ON = ("algorithm_config", "env_id", "env_kwargs", "obs_dim", "act_dim", "max_action", "ref_scores",
                  "observation_layout", "eval_episodes", "eval_seeding")


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
    log_to: tuple[str, ...] = ()  # copies of the metric logs: csv, tensorboard, wandb (gta_data.metric_sinks)



@dataclass
class _Arm:
    """One arm of a stack: its run directory, resolved config (``config.json``), data and member rows."""

    name: str
    out: Path
    run: dict[str, Any]
    data: Any  # OfflineData, or the Decision Transformer's sequence data
    members: slice  # rows of the stacked agent
    restart: bool  # out holds an earlier start that never reached its first checkpoint
    saved: dict[str, Any] | None  # config.json of the run being resumed
    history: dict[str, Any] = field(default_factory=lambda: {"evals": []})
    logs: SeedLogs | None = None


def _dataset_name(store) -> str:
    """Text the presets are matched against: string provenance (dataset ids, D4RL names), path, env."""
    prov = [str(v) for v in store.provenance.values() if isinstance(v, str)]
    return " ".join([*prov, store.path.name, store.env_id])


def _check(cfg: RunConfig) -> None:
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise RunError("steps and batch size must be positive")
    if cfg.eval_every < 0 or (cfg.eval_episodes is not None and cfg.eval_episodes < 0) or cfg.log_every < 1:
        raise RunError("eval_every and eval_episodes must be >= 0 and log_every >= 1")
    if cfg.checkpoint_every < 0:
        raise RunError(f"checkpoint_every must be >= 0 (0: at every evaluation), got {cfg.checkpoint_every}")
    if not cfg.seeds:
        raise RunError("no seeds")
    try:
        parse_sinks(cfg.log_to, "gta-rl")
    except SinkError as exc:
        raise RunError(str(exc)) from None


def _check_flags(cfg: RunConfig, algorithm: str, device: torch.device) -> None:
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


def _prepare(cfg: RunConfig, algorithm: str, paths: tuple[str, ...], saved: dict | None,
             device: torch.device) -> tuple[dict[str, Any], Any]:
    """The resolved config (``config.json``) and the device-resident data of one run; nothing is written."""
    stores = open_stores(paths)
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
        data, stores = _load_dt_data(algo_cfg, list(paths), device, cfg.mix_ratio)
    else:
        reward = RewardTransform(algo_cfg.reward_scale, algo_cfg.reward_bias, algo_cfg.normalize_reward)
        data, stores = load_training_data(paths, device=device, reward_transform=reward, mix_ratio=cfg.mix_ratio)
    env_id = stores[0].env_id
    if cfg.eval_episodes is None:  # recorded in config.json as the number; a resumed run keeps its own
        recorded = saved.get("eval_episodes") if saved is not None else None
        cfg = replace(cfg, eval_episodes=default_eval_episodes(env_id, algorithm) if recorded is None
                      else int(recorded))
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
        "data": list(paths),
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
        # runs started before per-seed evaluation episodes keep the scheme they started with
        "eval_seeding": saved.get("eval_seeding") if saved is not None else EVAL_SEEDING,
    }
    return run, data


def _check_arms_agree(arms: Sequence[_Arm]) -> None:
    first = arms[0]
    for arm in arms[1:]:
        for key in _ARMS_AGREE_ON:
            if arm.run.get(key) != first.run.get(key):
                hint = "pass --preset to give them the same settings, or " if key == "algorithm_config" else ""
                raise RunError(f"arms {first.name!r} and {arm.name!r} differ in {key}: they cannot train as one "
                               f"stack ({hint}train them separately)")


class _MemberState:
    """Splits the stacked agent's state into each arm's checkpoint and joins the arms' checkpoints back.

    A tensor is per member where its shape differs from a one-member agent's: k rows per member on dim 0,
    seed-major (k = 2 for a seed's twin critics). Others (the step, Adam's update count) are shared. The
    state statistics are per member in the stack ([S, 1, obs]) and shared within an arm ([obs], as in a run
    trained alone)."""

    STATS = ("model.obs_mean", "model.obs_std")

    def __init__(self, agent: Agent, run: dict[str, Any]) -> None:
        one = build_agent({**run, "seeds": run["seeds"][:1], "fused_mlp": False}, torch.device("cpu"))
        shapes = {k: v.shape for k, v in one.full_state_dict().items()}
        self.rows = {k: shapes[k][0] for k, v in agent.full_state_dict().items()
                     if k in shapes and k not in self.STATS and v.shape != shapes[k]}  # key -> rows per member

    def split(self, state: dict[str, torch.Tensor], members: slice) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in state.items():
            if key in self.STATS:
                out[key] = value[members.start, 0]
            elif key in self.rows:
                k = self.rows[key]
                out[key] = value[members.start * k:members.stop * k]
            else:
                out[key] = value
        return out

    def join(self, states: Sequence[dict[str, torch.Tensor]], current: dict[str, torch.Tensor]) -> dict:
        out = {}
        for key, value in current.items():
            if key in self.STATS:
                out[key] = value  # computed from the data, as each arm's own
            elif key in self.rows:
                out[key] = torch.cat([s[key] for s in states])
            else:
                out[key] = states[0][key]
        return out


def train(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_event: Callable[[str, int, dict[str, list[float]]], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run; returns the results document. ``stop_after`` ends the call after that
    many steps of this call (tests use it to simulate an interruption)."""
    arms = {"": (cfg.data, Path(out))}
    return train_arms(cfg, arms, resume=resume, stop_after=stop_after, progress=progress, on_event=on_event)[""]


def train_arms(
    cfg: RunConfig,
    arms: dict[str, tuple[Sequence[str], str | Path]],
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_event: Callable[[str, int, dict[str, list[float]]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train (or resume) runs that differ only in their data as one stacked agent: arm ``name`` trains
    ``cfg.seeds`` on the stores ``arms[name][0]`` into the run directory ``arms[name][1]``, exactly as
    :func:`train` would alone (``cfg.data`` is ignored). Returns each arm's results document.

    ``progress(done, total)`` is called after every step; ``on_event(kind, step, values)`` once the run
    starts (``"start"``, the first step: > 0 on a resume, with the latest evaluation's ``score_mean`` per
    member if there is one), at every metric line (``"train"``,
    each metric's value per stacked member, arm after arm) and at every recorded evaluation (``"eval"``,
    ``score_mean`` per member)."""
    _check(cfg)
    if not arms:
        raise RunError("no arms")
    algorithm = canonical_name(cfg.algorithm)
    device = resolve_device(cfg.device, RunError)
    _check_flags(cfg, algorithm, device)
    if len(arms) > 1 and algorithm == "dt":
        raise RunError("arms (several data configurations in one stack) are for the Q-learning algorithms, not dt")
    outs = [Path(out) for _, out in arms.values()]
    if len({o.resolve() for o in outs}) != len(outs):
        raise RunError("each arm needs its own run directory")
    restarts = [check_out_dir(out, resume) for out in outs]  # the name was validated by canonical_name
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32

    group: list[_Arm] = []
    for i, ((name, (paths, _)), out, restart) in enumerate(zip(arms.items(), outs, restarts, strict=True)):
        saved = read_config(out) if resume else None
        # several arms: each arm's arrays stay on the host, only their concatenation goes to the device
        where = device if len(arms) == 1 else torch.device("cpu")
        run, data = _prepare(cfg, algorithm, tuple(str(Path(p)) for p in paths), saved, where)
        if len(arms) > 1:
            run |= {"arm": name, "arms": list(arms)}
        rows = slice(i * len(cfg.seeds), (i + 1) * len(cfg.seeds))  # this arm's members in the stack
        group.append(_Arm(name, out, run, data, rows, restart, saved))
    _check_arms_agree(group)
    eval_episodes = group[0].run["eval_episodes"]
    # The stack's own view: every member's seed, the arms' shared settings (evaluation, agent, env).
    stack_run = {**group[0].run, "seeds": [s for arm in group for s in arm.run["seeds"]]}
    data = (group[0].data if len(group) == 1 else
            StackedData([a.data for a in group], [len(cfg.seeds)] * len(group), device=device))

    def new_agent() -> Agent:
        agent = build_agent(stack_run, device)
        agent.register_buffer("obs_mean", torch.as_tensor(data.obs_mean, device=device))
        agent.register_buffer("obs_std", torch.as_tensor(data.obs_std, device=device))
        return agent

    agent = new_agent()  # before anything is written: the fused-kernel check below reads its networks
    if cfg.fused_mlp and not fused_mlp_networks(agent):
        raise RunError(f"--fused-mlp: none of {algorithm}'s networks has the kernel's shape (two hidden layers of "
                       f"{fused_mlp.HIDDEN}); drop the flag")
    if eval_episodes > 0:  # before anything is written: an env the stores do not fit fails the run up front
        check_env_matches(stack_run["env_id"], stack_run["env_kwargs"], stack_run["observation_layout"],
                          stack_run["obs_dim"])
    members = _MemberState(agent, stack_run) if len(group) > 1 else None
    loaded = _read_checkpoints(group, device) if resume else None  # refusals before anything is written
    for arm in group:
        _open_run_dir(arm, resume)
    start, pending_at_start = 0, None
    if loaded is not None:
        start, pending_at_start = _resume(agent, group, members, loaded)
    if on_event is not None:  # a resumed run's latest evaluation, per member
        latest = [arm.history["evals"][-1]["scores"] for arm in group if arm.history["evals"]]
        on_event("start", start, {"score_mean": [s for scores in latest for s in scores]}
                 if len(latest) == len(group) else {})

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
        for arm in group:
            _record_eval(arm, step, _member_rows(scores, arm.members))
        if on_event is not None:
            on_event("eval", step, {"score_mean": list(scores["score_mean"])})

    def collect(wait: bool = True) -> None:
        """Record the background evaluation if one is out (``wait=False``: only if it has finished)."""
        if background is not None and (wait or background.finished()):
            done_eval = background.collect()
            if done_eval is not None:
                record_eval(*done_eval)

    def save(done: int, pending: int | None) -> None:
        state = agent.full_state_dict()
        for arm in group:
            own = state if members is None else members.split(state, arm.members)
            save_checkpoint(arm.out / CHECKPOINT, own, {"step": done, "history": arm.history, "pending_eval": pending})

    t0, t_last, last_step = time.perf_counter(), time.perf_counter(), start
    stop = StopSignals()
    try:
        stop.__enter__()
        if eval_episodes > 0:
            evaluator = make_evaluator(stack_run, eval_episodes, cfg.eval_async)
            if cfg.eval_overlap and algorithm != "dt":  # the DT's rollouts keep context state
                background = BackgroundEvaluation(new_agent(), evaluator, stack_run)
            if pending_at_start == start:
                record_eval(start, evaluate_agent(agent, evaluator, stack_run))
        for step in range(start, end):
            acc.add(runner(step))
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                means = acc.pop()
                now = time.perf_counter()
                rate = (done - last_step) / max(now - t_last, 1e-9)
                t_last, last_step = now, done
                for arm in group:
                    arm.logs.write({s: {"step": done, "kind": "train", "updates_per_s": rate,
                                        **{k: v[arm.members][i] for k, v in means.items()}}
                                    for i, s in enumerate(arm.run["seeds"])})
                if on_event is not None:
                    on_event("train", done, {"updates_per_s": [rate] * len(stack_run["seeds"]), **means})
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
                    record_eval(done, evaluate_agent(agent, evaluator, stack_run))
            if done % ckpt_every == 0 or done == cfg.steps:
                if pending is None:
                    collect()  # the checkpoint holds every evaluation up to its step
                # else: written now without this step's evaluation; a resume from it evaluates the step again
                save(done, pending)
            if progress is not None:
                progress(done, cfg.steps)
            if stop.requested():  # SIGINT / SIGTERM: every arm's checkpoint at this step, then stop
                collect()
                save(done, None)
                end = done
                break
        collect()
    finally:
        stop.__exit__()
        if evaluator is not None:
            evaluator.close()
        for arm in group:
            arm.logs.close()
    if stop.requested() and end < cfg.steps:
        raise RunStopped(f"stopped by {stop.name} at step {end}: checkpoint written; continue with --resume",
                         stop.exit_code)
    wall = time.perf_counter() - t0
    out_results = {}
    for arm in group:
        results = summarize_history(arm.run, arm.history, end)
        results["wall_s_this_call"] = wall
        if end == cfg.steps:
            write_json(arm.out / "results.json", results)
        out_results[arm.name] = results
    return out_results


def _read_checkpoints(group: Sequence[_Arm], device: torch.device) -> list[tuple[dict, dict]]:
    """Every arm's checkpoint, after checking each arm's config against its saved one and that the arms
    stopped at the same step: a resume is refused before any run directory is touched."""
    for arm in group:
        differs = [k for k in arm.run if k not in _FREE_ON_RESUME and arm.saved.get(k) != arm.run[k]]
        if differs:
            raise RunError(f"cannot resume {arm.out}: the config differs in {', '.join(differs)}")
    loaded = [load_checkpoint(arm.out / CHECKPOINT, device) for arm in group]
    steps = {int(meta["step"]) for _, meta in loaded}
    pendings = {meta.get("pending_eval") for _, meta in loaded}
    if len(steps) != 1 or len(pendings) != 1:
        at = ", ".join(f"{arm.name} at {int(meta['step'])}" for arm, (_, meta) in zip(group, loaded, strict=True))
        raise RunError(f"the arms' checkpoints are at different steps ({at}): resume them one by one")
    return loaded


def _open_run_dir(arm: _Arm, resume: bool) -> None:
    """Write config.json and open the seed logs (a resume was checked by :func:`_read_checkpoints`)."""
    if arm.restart:
        clear_unstarted_run(arm.out)
    arm.out.mkdir(parents=True, exist_ok=True)
    if resume:
        # written again when the run reaches its (possibly new) last step; until then it is unfinished
        (arm.out / "results.json").unlink(missing_ok=True)
    write_json(arm.out / "config.json", arm.run)
    sinks = MetricSinks(arm.out, arm.run.get("log_to") or (), name=f"{arm.out.name}", config=arm.run)
    if arm.restart:
        sinks.rewind(0)  # copies written by the start that never reached a checkpoint
    arm.logs = SeedLogs(arm.out, arm.run["seeds"], sinks)


def _resume(agent: Agent, group: Sequence[_Arm], members: _MemberState | None,
            loaded: Sequence[tuple[dict, dict]]) -> tuple[int, int | None]:
    """Load the arms' checkpoints into the stacked agent; the step and the pending evaluation's step."""
    if members is None:
        agent.load_full_state_dict(loaded[0][0])
    else:
        agent.load_full_state_dict(members.join([state for state, _ in loaded], agent.full_state_dict()))
    start, pending = int(loaded[0][1]["step"]), loaded[0][1].get("pending_eval")
    for arm, (_, meta) in zip(group, loaded, strict=True):
        arm.history = meta["history"]
        # A checkpoint written while its step's evaluation ran in the background: evaluate that step again.
        arm.logs.truncate_after(start, drop_evals_at=pending)
    return start, pending


def _member_rows(scores: dict[str, Any], rows: slice) -> dict[str, Any]:
    """An evaluation's per-member lists restricted to some members (one arm)."""
    out = {k: v[rows] for k, v in scores.items() if k != "targets"}
    if "targets" in scores:
        out["targets"] = {t: _member_rows(v, rows) for t, v in scores["targets"].items()}
    return out


def _record_eval(arm: _Arm, step: int, scores: dict[str, Any]) -> None:
    entry = {"step": step, "scores": scores["score_mean"]}
    if "targets" in scores:
        entry["targets"] = {t: v["score_mean"] for t, v in scores["targets"].items()}
    arm.history["evals"].append(entry)
    arm.logs.write({s: {"step": step, "kind": "eval", "return_mean": scores["return_mean"][i],
                        "score_mean": scores["score_mean"][i], "scores": scores["scores"][i],
                        **({"targets": {t: {"return_mean": v["return_mean"][i], "score_mean": v["score_mean"][i]}
                                        for t, v in scores["targets"].items()}} if "targets" in scores else {})}
                    for i, s in enumerate(arm.run["seeds"])})


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


