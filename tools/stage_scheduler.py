"""The scheduler of tools/reproduce.py, tools/reproduce_pixel.py and tools/sweep.py: stages (package CLI commands) run in dependency order,
each finished one recorded in its workdir's ledger (``stages.json``) so that a rerun skips it.

A graph is one workdir's stages, a Table 1 row; a sweep runs many graphs at once, each keeping its own ledger
and logs, so each of its rows is the row reproduce.py makes alone in that workdir. The scheduler decides when a
stage starts (its dependencies done, the limits allowing, ``--stop-after-s`` not passed) and alone writes the
ledgers; an executor decides where it runs: ``LocalExecutor`` starts it as a subprocess of this host, pinned to
one GPU of a slot pool through ``CUDA_VISIBLE_DEVICES`` where the limits name GPUs; ``sweep_ray.RayExecutor``
submits it as a Ray task, and Ray places it on a machine and a GPU of its cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str
    needs: tuple[str, ...]
    command: list[str]
    store: str | None = None  # the store the stage writes, if any (found complete: the stage is done)
    resume_flag: list[str] = field(default_factory=list)  # added on a rerun that continues the stage
    gpu: bool = False  # runs on a GPU: holds one GPU slot while it runs (CPU stages hold none)

    @property
    def args(self) -> list[str]:
        """The command without the interpreter or script that runs the CLI: what must match on a rerun."""
        for i, word in enumerate(self.command):
            if word.startswith("from gta_") or Path(word).name.startswith("gta-"):
                return self.command[i + 1:]
        return self.command


@dataclass
class Graph:
    """One workdir's stages: its ledger is ``workdir/stages.json``, its stages' logs ``workdir/logs/NAME.log``."""

    workdir: Path
    stages: list[Stage]
    label: str = ""  # prefixed to the stage names in progress lines and errors (a sweep: the row's name)

    def name(self, stage: Stage) -> str:
        return f"{self.label}/{stage.name}" if self.label else stage.name


@dataclass(frozen=True)
class Limits:
    """How many stages run at once. GPU slots: each device in ``gpus`` runs at most ``per_gpu`` GPU stages at
    once, each pinned to it alone through CUDA_VISIBLE_DEVICES, and CPU stages see no GPU; with no ``gpus``,
    nothing is pinned (reproduce.py: every stage sees the devices the caller sees)."""

    jobs: int | None = None  # stages at once over all graphs (None: no limit but the others)
    gpus: tuple[str, ...] = ()  # device ids of the GPU slot pool
    per_gpu: int = 1  # GPU stages sharing one device at once
    cpu_jobs: int | None = None  # stages without a GPU at once (None: no limit but ``jobs``)

    def check(self) -> None:
        for name, value in (("jobs", self.jobs), ("per_gpu", self.per_gpu), ("cpu_jobs", self.cpu_jobs)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
        if len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"a GPU is named twice in {','.join(self.gpus)}")


@dataclass
class Outcome:
    stopped: bool = False  # --stop-after-s ended the call; a rerun continues
    failed: list[str] = field(default_factory=list)  # one line per failed stage, naming its log
    failed_stages: list[str] = field(default_factory=list)  # their names (label/stage)
    blocked: list[str] = field(default_factory=list)  # stages not run because a stage they need failed
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.stopped and not self.failed


class Ledger:
    """``stages.json``: each finished stage's command, arguments and wall time, the time of its stopped
    earlier calls included (those are kept in ``stages-partial.json`` meanwhile). Written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial_path = path.with_name("stages-partial.json")
        self.done: dict[str, dict] = read_json(path, {})
        self.partial: dict[str, float] = read_json(self.partial_path, {})

    def matches(self, stage: Stage) -> bool:
        old = self.done[stage.name]
        return old["args"] == stage.args if "args" in old else old["command"] == stage.command

    def record(self, stage: Stage, wall_s: float | None, note: str = "") -> None:
        if wall_s is not None:
            wall_s += self.partial.pop(stage.name, 0.0)
        self.done[stage.name] = {"command": stage.command, "args": stage.args, "wall_s": wall_s,
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **({"note": note} if note else {})}
        write_json(self.path, self.done)
        write_json(self.partial_path, self.partial)

    def stopped(self, stage: Stage, wall_s: float) -> None:
        self.partial[stage.name] = self.partial.get(stage.name, 0.0) + wall_s
        write_json(self.partial_path, self.partial)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def store_complete(path: str) -> bool:
    from gta_data import StoreError, TrajectoryStore

    try:
        TrajectoryStore.open(path)
    except (StoreError, FileNotFoundError, NotADirectoryError, ValueError):
        return False
    return True


def started(stage: Stage) -> bool:
    """Whether a stage that is continued with a flag (``--resume``) left a checkpoint in its ``--out``: one per
    arm below it (gta-rl train) or in it (gta-pixel pretrain and finetune)."""
    if not stage.resume_flag:
        return False
    out = Path(stage.command[stage.command.index("--out") + 1])
    return (out / "checkpoint.safetensors").exists() or any(out.glob("*/checkpoint.safetensors"))


def log_tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


class LocalExecutor:
    """Each stage a subprocess of this host in a session of its own, its output appended to its log."""

    def start(self, stage: Stage, command: list[str], env: dict[str, str] | None, log_path: Path):
        log = log_path.open("a")
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=None if env is None else {**os.environ, **env})
        return proc, log

    def poll(self, handle) -> tuple[int, str, float | None] | None:
        """None while it runs; then its exit status, why it failed where the command did not say (else ""),
        and its wall time where the executor knows it better than the scheduler (else None)."""
        proc, log = handle
        if proc.poll() is None:
            return None
        log.close()
        _kill_group(proc)
        return proc.returncode, "", None

    def stop(self, handle) -> None:
        """SIGTERM to the stage's own process: training commands write a checkpoint at their step boundary first
        (their worker processes are closed by them); whatever is left of the group goes after, in ``wait``."""
        handle[0].send_signal(signal.SIGTERM)

    def wait(self, handle, timeout: float) -> None:
        proc, log = handle
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _kill_group(proc)
        log.close()


def _kill_group(proc: subprocess.Popen) -> None:
    """End what a finished stage left running in its process group (e.g. compile workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@dataclass
class _Task:
    graph: Graph
    stage: Stage
    ledger: Ledger
    order: tuple[int, int]  # (position in its graph, graph index): every graph's first stages start first

    @property
    def name(self) -> str:
        return self.graph.name(self.stage)

    @property
    def log(self) -> Path:
        return self.graph.workdir / "logs" / f"{self.stage.name}.log"


def run_graphs(graphs: list[Graph], limits: Limits | None = None, executor=None, stop_after_s: float | None = None,
               t0: float | None = None, keep_going: bool = False, poll_s: float = 1.0,
               stop_timeout_s: float = 300.0) -> Outcome:
    """Run what is left of every graph within ``limits``. A failed stage raises SystemExit with its log's tail,
    after stopping the others; with ``keep_going`` it is reported in one line instead and every stage that
    does not need it goes on. Stopped by ``stop_after_s``: the running stages get SIGTERM (and continue on a
    rerun), nothing new starts, and the outcome says so."""
    limits = limits or Limits()
    limits.check()
    executor = executor or LocalExecutor()
    t0 = time.perf_counter() if t0 is None else t0
    tasks: list[_Task] = []
    for gi, graph in enumerate(graphs):
        ledger = Ledger(graph.workdir / "stages.json")
        (graph.workdir / "logs").mkdir(parents=True, exist_ok=True)
        names = [s.name for s in graph.stages]
        if len(set(names)) != len(names):
            raise SystemExit(f"error: a stage name appears twice in {graph.workdir}")
        for si, stage in enumerate(graph.stages):
            if stage.name in ledger.done and not ledger.matches(stage):
                old = ledger.done[stage.name]
                raise SystemExit(f"error: stage {stage.name} in {graph.workdir} was run with another command "
                                 f"({' '.join(old.get('args', old['command']))}); use another --workdir for another "
                                 "scale")
            tasks.append(_Task(graph, stage, ledger, (si, gi)))
    tasks.sort(key=lambda t: t.order)
    outcome = Outcome()
    free = {g: limits.per_gpu for g in limits.gpus}
    running: dict[str, tuple[_Task, object, float, str | None]] = {}
    failed: set[tuple[int, str]] = set()

    def stamp() -> str:
        return f"[{time.perf_counter() - t0:7.0f} s]"

    def done(t: _Task, need: str) -> bool:
        return need in t.ledger.done

    def key(t: _Task) -> tuple[int, str]:
        return t.order[1], t.stage.name

    for t in tasks:
        if t.stage.name in t.ledger.done:
            print(f"{stamp()} {t.name}: done earlier ({t.ledger.done[t.stage.name]['wall_s'] or 0:.0f} s), skipped")
    pending = [t for t in tasks if t.stage.name not in t.ledger.done]

    def release(device: str | None) -> None:
        if device is not None:
            free[device] += 1

    def stop_all(reason: str) -> None:
        for t, handle, _, _ in running.values():
            print(f"{stamp()} {t.name}: stopping ({reason}); rerun to continue", flush=True)
            executor.stop(handle)
        for t, handle, began, device in running.values():
            executor.wait(handle, stop_timeout_s)
            t.ledger.stopped(t.stage, time.perf_counter() - began)
            release(device)
        running.clear()

    # SIGTERM (a batch system's preemption, kill) ends the call as Ctrl-C does: the stages run in sessions of
    # their own, so they are stopped here, with their time kept, rather than left running unrecorded.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        while pending or running:
            if stop_after_s is not None and time.perf_counter() - t0 > stop_after_s and running:
                stop_all(f"--stop-after-s {stop_after_s:.0f}")
                outcome.stopped = True
                break
            for t in list(pending):
                if limits.jobs is not None and len(running) >= limits.jobs:
                    break
                if any((t.order[1], n) in failed for n in t.stage.needs):
                    pending.remove(t)
                    failed.add(key(t))
                    outcome.blocked.append(t.name)
                    print(f"{stamp()} {t.name}: not run (a stage it needs failed)", flush=True)
                    continue
                if not all(done(t, n) for n in t.stage.needs):
                    continue
                device = None
                if limits.gpus and t.stage.gpu:
                    device = max(free, key=lambda g: free[g])  # the least busy device (the first of equals)
                    if free[device] == 0:
                        continue
                elif limits.cpu_jobs is not None and sum(1 for r in running.values() if r[3] is None) >= limits.cpu_jobs:
                    continue
                if t.stage.store and store_complete(t.stage.store):
                    pending.remove(t)
                    t.ledger.record(t.stage, None, "output found complete")
                    print(f"{stamp()} {t.name}: {t.stage.store} found complete, not redone", flush=True)
                    continue
                if stop_after_s is not None and time.perf_counter() - t0 > stop_after_s:
                    print(f"{stamp()} stopping before {t.name} (--stop-after-s {stop_after_s:.0f}); rerun to continue")
                    outcome.stopped = True
                    break
                pending.remove(t)
                command = t.stage.command + (t.stage.resume_flag if started(t.stage) else [])
                env = None
                if limits.gpus:
                    env = {"CUDA_VISIBLE_DEVICES": device if device is not None else ""}
                    if device is not None:
                        free[device] -= 1
                where = f" on GPU {device}" if device is not None else ""
                print(f"{stamp()} {t.name}: start{where}", flush=True)
                running[t.name] = (t, executor.start(t.stage, command, env, t.log), time.perf_counter(), device)
            if outcome.stopped:
                stop_all(f"--stop-after-s {stop_after_s:.0f}")
                break
            for name, (t, handle, began, device) in list(running.items()):
                status = executor.poll(handle)
                if status is None:
                    continue
                del running[name]
                release(device)
                code, why, wall = status
                wall = time.perf_counter() - began if wall is None else wall
                if code != 0:
                    what = why or f"exit {code}"
                    if not keep_going:
                        tail = log_tail(t.log, 15)
                        stop_all(f"{name} failed")
                        raise SystemExit(f"error: stage {name} failed ({what}) after {wall:.0f} s; its log {t.log} "
                                         "ends:\n" + "\n".join(tail))
                    last = next((line.strip() for line in reversed(log_tail(t.log, 30)) if line.strip()), "")
                    line = f"error: stage {name} failed ({what}) after {wall:.0f} s; log {t.log}" + (
                        f" (last line: {last[:200]})" if last else "")
                    print(f"{stamp()} {line}", flush=True)
                    outcome.failed.append(line)
                    outcome.failed_stages.append(name)
                    failed.add(key(t))
                    continue
                t.ledger.record(t.stage, wall)
                print(f"{stamp()} {name}: done in {t.ledger.done[t.stage.name]['wall_s']:.0f} s", flush=True)
            if running:
                time.sleep(poll_s)
            elif pending and not any(
                    all(done(t, n) or (t.order[1], n) in failed for n in t.stage.needs) for t in pending):
                raise SystemExit(f"error: stages {', '.join(t.name for t in pending)} wait for stages that cannot run")
    except KeyboardInterrupt:
        stop_all("interrupted")
        raise SystemExit("interrupted: the running stages were stopped; rerun the same command to continue") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    outcome.wall_s = time.perf_counter() - t0
    return outcome


def add_row_options(ap: argparse.ArgumentParser, scale_options: dict[str, tuple[type, str | None]], tiny: str) -> None:
    """The options of a row command (reproduce.py, reproduce_pixel.py) that run_row serves: where, on what, how
    many stages at once, when to stop, the scale (``scale_options``: option -> (type, help)); ``tiny`` says
    what ``--tiny`` shrinks. The command adds its own options and ``--commit`` (``add_commit_option``) after."""
    ap.add_argument("--workdir", type=Path, required=True, help="where every stage writes (reruns continue here)")
    ap.add_argument("--gpu", action="store_true", help="CUDA with every fast path (bf16, compile, CUDA graphs)")
    ap.add_argument("--tiny", action="store_true", help=f"a CPU smoke run: {tiny}")
    ap.add_argument("--jobs", type=int, default=1, help="stages run at once (their dependencies allowing)")
    ap.add_argument("--stop-after-s", type=float, default=None,
                    help="stop the stages still running after this many seconds; a rerun continues")
    for option, (kind, text) in scale_options.items():
        ap.add_argument(option, type=kind, default=None, help=text)


def add_commit_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--commit", default=None, help="the code's commit, for the row (default: git rev-parse)")


def run_row(workdir: Path, stages: list[Stage], jobs: int, stop_after_s: float | None, t0: float,
            write_row: Callable[[], None]) -> int:
    """A row command's run (reproduce.py, reproduce_pixel.py): the stages left, ``jobs`` at once; 3 if stopped by
    ``stop_after_s`` (the same command continues), else ``write_row()`` (row.json, row.md), row.md printed, 0."""
    if run_graphs([Graph(workdir, stages)], Limits(jobs=jobs), stop_after_s=stop_after_s, t0=t0).stopped:
        print(f"stopped after {time.perf_counter() - t0:.0f} s: rerun the same command to continue")
        return 3
    write_row()
    print((workdir / "row.md").read_text())
    print(f"row written to {workdir / 'row.json'} and {workdir / 'row.md'} ({time.perf_counter() - t0:.0f} s this call)")
    return 0


def write_row_files(workdir: Path, row: dict, lines: list[str]) -> None:
    """A row's ``row.json`` (``row``) and ``row.md`` (``lines`` and the wall time of every stage)."""
    lines = [*lines, "", "Stage wall times (s): " + ", ".join(
        f"{k} {v:.0f}" if v is not None else f"{k} (found)" for k, v in row["stage_wall_s"].items()), ""]
    write_json(workdir / "row.json", row)
    (workdir / "row.md").write_text("\n".join(lines))


def git_commit() -> str:
    """The short commit of the code these tools belong to, for a row's provenance ('unknown' without git)."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    proc = subprocess.run([git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)
    return proc.stdout.strip() or "unknown"
