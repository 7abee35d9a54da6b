"""Stage 5 of GTA's pixel protocol: evaluate DrQ+BC policies in their pixel task.

The policy is V-D4RL's evaluation mode: encoder, actor trunk and policy head, the tanh mean action, on the
last ``frame_stack`` frames (the reset frame repeated at the start). Every seed of a run plays the same
episode seeds (paired comparisons across runs), all seeds and episodes at once: the environments step in
worker processes (rendering is the slow part), the policy runs batched over all of them on the agent's
device, in the run's recorded arithmetic (that of its pretraining, which ``encode`` uses too; see
:mod:`gta_pixel.runs`). Score: 100 (return - ref_min) / (ref_max - ref_min) with the pixel store's reference
scores (dm_control: 0 and 1000, so return / 10, V-D4RL's normalisation).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gta_data.accel.devices import resolve_device
from gta_pixel import runs
from gta_pixel.drqbc_fast import DrQBCStack
from gta_pixel.errors import RunError, TaskError
from gta_pixel.tasks import make_task
from gta_rl.checkpoint import write_json

EVAL_SEED = 100_000  # first episode seed of evaluations (datasets are made from small seeds)


def _worker(conn, spec: dict[str, Any], count: int, inherited: Sequence[Any] = ()) -> None:
    """Hosts ``count`` tasks; answers ("reset", seeds) with frames and ("step", actions or None per task) with
    (frame, reward, terminated, truncated) or None; every answer is ("ok", payload) or ("error", message)."""
    for other in inherited:  # a forked child holds the parent's ends of earlier pipes
        other.close()
    tasks = []
    try:
        tasks = [make_task(spec) for _ in range(count)]
        conn.send(("ok", None))
        while True:
            cmd, payload = conn.recv()
            if cmd == "close":
                break
            if cmd == "reset":
                conn.send(("ok", [task.reset(int(s))[1] for task, s in zip(tasks, payload, strict=True)]))
            else:
                conn.send(("ok", [None if a is None else task.step(a)[1:]
                                  for task, a in zip(tasks, payload, strict=True)]))
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception as exc:  # reported to the parent as one line
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}".splitlines()[0]))
        except OSError:
            pass
    finally:
        for task in tasks:
            task.close()


class TaskPool:
    """``num`` copies of a pixel task, in ``workers`` processes (0: in this process)."""

    def __init__(self, spec: dict[str, Any], num: int, workers: int) -> None:
        self.local, self.conns, self.procs = [], [], []
        if workers <= 0:
            self.local = [make_task(spec) for _ in range(num)]
            return
        counts = [len(c) for c in np.array_split(np.arange(num), min(workers, num))]
        self.bounds = np.cumsum([0, *counts])
        fork = "fork" in mp.get_all_start_methods()  # as gta_rl.evaluation: spawn re-imports __main__
        ctx = mp.get_context("fork" if fork else "spawn")
        try:
            for count in counts:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, daemon=True,
                                   args=(child, spec, count, list(self.conns) if fork else []))
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)
            self._gather()
        except BaseException:
            self.close()
            raise

    def _gather(self) -> list[Any]:
        out = []
        for conn in self.conns:
            try:
                status, payload = conn.recv()
            except EOFError:
                raise TaskError("an evaluation worker died") from None
            if status != "ok":
                raise TaskError(f"evaluation worker: {payload}")
            out.extend(payload or [])
        return out

    def _call(self, cmd: str, values: Sequence[Any]) -> list[Any]:
        if self.local:
            if cmd == "reset":
                return [task.reset(int(s))[1] for task, s in zip(self.local, values, strict=True)]
            return [None if a is None else task.step(a)[1:] for task, a in zip(self.local, values, strict=True)]
        for i, conn in enumerate(self.conns):
            conn.send((cmd, list(values[self.bounds[i]:self.bounds[i + 1]])))
        return self._gather()

    def reset(self, seeds: Sequence[int]) -> list[np.ndarray]:
        return self._call("reset", seeds)

    def step(self, actions: Sequence[np.ndarray | None]) -> list[Any]:
        return self._call("step", actions)

    def close(self) -> None:
        for task in self.local:
            task.close()
        for conn in self.conns:
            try:
                conn.send(("close", None))
            except OSError:
                pass
            conn.close()
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self.local, self.conns, self.procs = [], [], []


def play(agent: DrQBCStack, spec: dict[str, Any], episodes: int, *, workers: int = 0, seed: int = EVAL_SEED,
         max_steps: int | None = None) -> np.ndarray:
    """[S, episodes] undiscounted returns of every seed of ``agent`` on episode seeds seed .. seed+episodes-1;
    ``max_steps`` cuts episodes short (smoke tests)."""
    s, k = agent.num_seeds, agent.config.frame_stack
    n = s * episodes
    pool = TaskPool(spec, n, workers)
    try:
        frames = np.stack(pool.reset([seed + e for _ in range(s) for e in range(episodes)]))  # [n, 3, H, W]
        stack = np.repeat(frames[:, None], k, axis=1)  # [n, K, 3, H, W]
        returns = np.zeros(n)
        active = np.ones(n, dtype=bool)
        t = 0
        while active.any() and (max_steps is None or t < max_steps):
            obs = torch.as_tensor(stack.reshape(s, episodes, -1, *stack.shape[3:]), device=agent.step.device)
            actions = agent.act(obs).float().cpu().numpy().reshape(n, -1)
            results = pool.step([actions[i] if active[i] else None for i in range(n)])
            for i, result in enumerate(results):
                if result is None:
                    continue
                frame, reward, terminated, truncated = result
                returns[i] += reward
                stack[i, :-1] = stack[i, 1:]
                stack[i, -1] = frame
                if terminated or truncated:
                    active[i] = False
            t += 1
    finally:
        pool.close()
    return returns.reshape(s, episodes)


def normalized(returns: np.ndarray, ref: Sequence[float] | None) -> np.ndarray | None:
    """100 (R - ref_min) / (ref_max - ref_min), or None without reference scores."""
    if ref is None:
        return None
    lo, hi = float(ref[0]), float(ref[1])
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)


def evaluate(run: Path, *, episodes: int = 10, workers: int = 0, device: str = "auto", seed: int = EVAL_SEED,
             max_steps: int | None = None, write: bool = True) -> dict[str, Any]:
    """Evaluate every seed of a run directory; writes ``eval.json`` there and returns its content."""
    if episodes < 1:
        raise RunError(f"--episodes must be positive, got {episodes}")
    dev = resolve_device(device, RunError)
    agent, config, _ = runs.load_agent(run, dev)
    returns = play(agent, config["task"], episodes, workers=workers, seed=seed, max_steps=max_steps)
    scores = normalized(returns, config.get("ref_scores"))
    per_seed = {}
    for i, s in enumerate(agent.seed_list):
        per_seed[str(s)] = {"returns": returns[i].tolist(), "mean_return": float(returns[i].mean()),
                            "score": None if scores is None else float(scores[i].mean())}
    result = {"run": str(Path(run).resolve()), "stage": config["stage"], "task": config["task"],
              "episodes": episodes, "episode_seeds": [seed, seed + episodes - 1], "max_steps": max_steps,
              "ref_scores": config.get("ref_scores"), "arithmetic": {"bf16": agent.bf16}, "seeds": per_seed,
              "mean_return": float(returns.mean()), "mean_score": None if scores is None else float(scores.mean())}
    if write:
        write_json(Path(run) / runs.EVAL, result)
    return result
