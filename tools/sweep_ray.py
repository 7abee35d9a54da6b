"""The Ray backend of tools/sweep.py: each stage a Ray task, placed by Ray on a machine of its cluster with one
GPU (a 1/K share with ``--per-gpu K``) or none, CUDA_VISIBLE_DEVICES set by Ray to the GPU it holds.

The scheduler of tools/stage_scheduler.py still decides when each stage is submitted (its dependencies done)
and alone writes the ledgers, on the driver; Ray's own queue holds the submitted stages until a machine has
the resources. A cluster of several machines needs:

- the sweep's root on a filesystem every machine mounts at the same path: a stage reads the stores the stages
  before it wrote, possibly elsewhere, and the driver reads every stage's log and stores;
- this repository's environment at the same path on every machine: the stage commands name its interpreter
  and console scripts.

Ray is an optional dependency (``pip install ray``), imported only here.
"""

from __future__ import annotations

import time
from pathlib import Path

from stage_scheduler import Graph, Stage


def _stage_task(stop_timeout_s: float):
    """The function each task runs. Made here, a closure, so that Ray ships it by value: workers need not
    import this file."""

    def run_stage(command: list[str], log_path: str, env: dict[str, str]) -> tuple[int, float]:
        import os
        import signal
        import socket
        import subprocess
        import time

        began = time.perf_counter()
        with open(log_path, "a") as log:
            log.write(f"\n$ {' '.join(command)}\n# on {socket.gethostname()}, CUDA_VISIBLE_DEVICES="
                      f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}\n")
            log.flush()
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **env})
            try:
                while proc.poll() is None:  # short sleeps, not wait(): Ray's cancel lands between them
                    time.sleep(0.2)
                code = proc.returncode
            except KeyboardInterrupt:  # ray.cancel: SIGTERM, so that a training stage checkpoints first
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=stop_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
            finally:
                try:  # what the stage left running in its process group (e.g. compile workers)
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        return code, time.perf_counter() - began

    return run_stage


class RayExecutor:
    """Submits stages as Ray tasks to the cluster at ``address`` (None: the one this process has joined
    already, else Ray's default: RAY_ADDRESS's, the one ``ray start`` made on this machine, or a new one)."""

    def __init__(self, address: str | None = None, per_gpu: int = 1, cpus_per_stage: float = 1.0,
                 stop_timeout_s: float = 300.0) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=address, **({} if address else {"include_dashboard": False}))
        self.ray = ray
        self.per_gpu = per_gpu
        self.cpus = cpus_per_stage
        self.task = ray.remote(max_retries=0)(_stage_task(stop_timeout_s))

    def check(self, graphs: list[Graph]) -> None:
        """A one-line error now rather than stages that wait forever for resources the cluster lacks."""
        resources = self.ray.cluster_resources()
        if any(s.gpu for g in graphs for s in g.stages) and resources.get("GPU", 0) < 1:
            raise SystemExit("error: the Ray cluster has no GPU, and the stages of --gpu need one each; "
                             "start its workers on GPU machines or leave out --gpu")
        if resources.get("CPU", 0) < self.cpus:
            raise SystemExit(f"error: the Ray cluster has {resources.get('CPU', 0):g} CPUs; each stage asks for "
                             f"{self.cpus:g}")

    def start(self, stage: Stage, command: list[str], env: dict[str, str] | None, log_path: Path):
        env = dict(env or {})
        if not stage.gpu:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU stage leaves the GPUs to the stages Ray gave them to
        return self.task.options(num_gpus=1 / self.per_gpu if stage.gpu else 0, num_cpus=self.cpus,
                                 name=stage.name).remote(command, str(log_path), env)

    def poll(self, ref) -> tuple[int, str, float | None] | None:
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            code, wall = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # the worker or its machine died, or the task was cancelled
            first = (str(e).strip().splitlines() or [""])[0][:200]
            return 1, f"Ray: {type(e).__name__}{': ' + first if first else ''}", None
        return code, "", wall  # the stage's own time, not its wait in Ray's queue

    def stop(self, ref) -> None:
        self.ray.cancel(ref)  # KeyboardInterrupt in the task: it sends the stage SIGTERM

    def wait(self, ref, timeout: float) -> None:
        t0 = time.perf_counter()
        ready, _ = self.ray.wait([ref], timeout=timeout)
        if not ready:
            self.ray.cancel(ref, force=True)
        try:
            self.ray.get(ref, timeout=max(1.0, timeout - (time.perf_counter() - t0)))
        except (self.ray.exceptions.RayError, TimeoutError):
            pass
