"""Many Table 1 rows at once, over the GPUs of one host or the machines of a Ray cluster.

    python tools/sweep.py table1 --root runs/table1 --gpu                      # every GPU of this host
    python tools/sweep.py hopper-medium walker2d-medium --root runs/t1 --gpu --gpus 0,1 --per-gpu 2
    python tools/sweep.py table1 --root /shared/table1 --gpu --backend ray --address auto   # a Ray cluster
    python tools/sweep.py hopper-medium --root runs/ablation --gpu --variant base --variant long:diffusion-steps=200000
    python tools/sweep.py pointmaze-umaze pointmaze-medium --root /tmp/sweep --tiny          # a CPU smoke run

A row is tools/reproduce.py's: the same stages (``reproduce.build_stages``), in its own workdir
``ROOT/DATASET`` (``ROOT/VARIANT/DATASET`` with ``--variant``) with its own ``stages.json``, finished by the same
``row.json`` and ``row.md``; ``reproduce.py DATASET --workdir ROOT/DATASET`` at the same scale finds it done. The
rows' stages are independent of each other, so a sweep only adds where they run: with ``--backend local``
each GPU stage holds one slot of a GPU pool and sees that GPU alone (CUDA_VISIBLE_DEVICES), ``--per-gpu K``
stages sharing a GPU, while the CPU stages (data, S4RL, compare) hold no GPU slot, ``--cpu-jobs`` of them at
once; with ``--backend ray`` each stage is a Ray task asking for one GPU (1/K) or none (tools/sweep_ray.py).
A rerun continues: finished stages are skipped, training resumes from its checkpoints, ``--stop-after-s`` ends a
call as in reproduce.py. A failed stage is reported in one line naming its log; the stages that do not need it
go on (``--fail-fast``: stop everything). ``ROOT/sweep.json`` and ``ROOT/sweep.md`` gather the rows and the wall
time of each call.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402  (siblings of this script)
from stage_scheduler import Graph, Limits, Outcome, read_json, run_graphs, write_json  # noqa: E402

TABLE1 = tuple(reproduce.PAPER)  # the paper's rows: `table1` on the command line


@dataclass(frozen=True)
class Row:
    dataset: str
    workdir: Path
    scale: reproduce.Scale
    variant: str = ""  # the name of its --variant ("": the sweep's one scale)

    @property
    def label(self) -> str:
        return f"{self.variant}/{self.dataset}" if self.variant else self.dataset


def parse_variant(text: str, tiny: bool, given: dict) -> tuple[str, reproduce.Scale]:
    """``NAME[:OPTION=VALUE]...``, OPTION one of reproduce.py's scale options: the sweep's scale with those."""
    name, *items = text.split(":")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"--variant {text!r}: its name (before the first ':') must be letters, digits, '_', '.', '-'")
    given = dict(given)
    for item in items:
        key, eq, value = item.partition("=")
        option = "--" + key.strip().lstrip("-")
        if not eq or option not in reproduce.SCALE_OPTIONS:
            raise ValueError(f"--variant {text!r}: {item!r} is not OPTION=VALUE with OPTION one of "
                             f"{', '.join(o[2:] for o in reproduce.SCALE_OPTIONS)}")
        kind = reproduce.SCALE_OPTIONS[option][0]
        try:
            given[option[2:].replace("-", "_")] = kind(value)
        except ValueError:
            raise ValueError(f"--variant {text!r}: {key} takes a {kind.__name__}, not {value!r}") from None
    return name, reproduce.scale_from(tiny, given)


def plan(datasets: list[str], root: Path, tiny: bool = False, given: dict | None = None,
         variants: list[str] = ()) -> list[Row]:
    """The rows of a sweep: every dataset (``table1``: the paper's twelve) at every variant's scale."""
    given = given or {}
    names = []
    for d in datasets:
        for name in TABLE1 if d == "table1" else (d,):
            if not reproduce.known_dataset(name):
                raise ValueError(f"no Table 1 row for {name!r} (choose from table1, {', '.join(TABLE1)})")
            if name not in names:
                names.append(name)
    scales = [parse_variant(v, tiny, given) for v in variants] or [("", reproduce.scale_from(tiny, given))]
    seen = [n for n, _ in scales]
    if len(set(seen)) != len(seen):
        raise ValueError(f"a --variant name is given twice ({', '.join(seen)})")
    return [Row(d, root / v / d if v else root / d, scale, v) for v, scale in scales for d in names]


def parse_gpus(text: str) -> tuple[str, ...]:
    """``N`` (GPUs 0..N-1) or a list of device ids ``0,2,3``."""
    text = text.strip()
    if text.isdigit() and "," not in text:
        return tuple(str(i) for i in range(int(text)))
    ids = tuple(t.strip() for t in text.split(","))
    if not all(ids) or not all(re.fullmatch(r"[A-Za-z0-9:-]+", i) for i in ids):
        raise ValueError(f"--gpus {text!r}: give a count (4) or device ids (0,1,3)")
    return ids


def detect_gpus() -> tuple[str, ...]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES where set, else every GPU nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(str(i) for i in range(sum(1 for line in out.splitlines() if line.startswith("GPU "))))


def default_cpu_jobs() -> int:
    """CPU stages at once: a quarter of the cores (the GPU stages' processes use CPUs too), at least 2."""
    return max(2, (os.cpu_count() or 2) // 4)


def run_sweep(rows: list[Row], root: Path, gpu: bool, limits: Limits, executor=None, *,
              stop_after_s: float | None = None, keep_going: bool = True, commit: str = "unknown",
              build: Callable = reproduce.build_stages, finish: Callable[[Row], dict] | None = None,
              backend: str = "local", poll_s: float = 1.0) -> tuple[dict, Outcome]:
    """Run what is left of every row's stages, then write each finished row (``finish``; default
    reproduce.write_row) and the sweep's summary. ``build`` makes a row's stages (reproduce.build_stages)."""
    t0 = time.perf_counter()
    began = time.strftime("%Y-%m-%dT%H:%M:%S")
    if finish is None:
        def finish(row: Row) -> dict:
            return reproduce.write_row(row.dataset, row.workdir, row.scale, gpu, commit)
    graphs = []
    for row in rows:
        row.workdir.mkdir(parents=True, exist_ok=True)
        graphs.append(Graph(row.workdir, build(row.dataset, row.workdir, row.scale, gpu), row.label))
    if hasattr(executor, "check"):
        executor.check(graphs)
    outcome = run_graphs(graphs, limits, executor, stop_after_s=stop_after_s, t0=t0, keep_going=keep_going,
                         poll_s=poll_s)
    entries = []
    for row, graph in zip(rows, graphs, strict=True):
        ledger = read_json(row.workdir / "stages.json", {})
        entry = {"label": row.label, "dataset": row.dataset, "variant": row.variant, "workdir": str(row.workdir),
                 "stages_done": sum(s.name in ledger for s in graph.stages), "stages": len(graph.stages),
                 "stage_wall_s": sum(v.get("wall_s") or 0.0 for v in ledger.values())}
        if any(name.startswith(f"{row.label}/") for name in outcome.failed_stages):
            entry["status"] = "failed"
        elif entry["stages_done"] < entry["stages"]:
            entry["status"] = "stopped" if outcome.stopped else "incomplete"
        else:
            try:
                result = finish(row)
            except SystemExit as e:  # the row's reports disagree with it (reproduce.write_row says why)
                line = f"error: row {row.label}: {str(e).removeprefix('error: ')}"
                print(line, flush=True)
                outcome.failed.append(line)
                entry["status"] = "failed"
            else:
                entry.update(status="done", scores=result.get("scores"), paper=result.get("paper"),
                             algorithm=result.get("algorithm"))
        entries.append(entry)
    summary = write_summary(root, entries, {
        "started": began, "wall_s": round(time.perf_counter() - t0, 1), "backend": backend,
        "gpus": list(limits.gpus), "per_gpu": limits.per_gpu, "cpu_jobs": limits.cpu_jobs, "commit": commit,
        "stopped": outcome.stopped, "failed": len(outcome.failed), "rows_done": sum(e["status"] == "done" for e in entries),
        "rows": len(entries)})
    return summary, outcome


def write_summary(root: Path, entries: list[dict], call: dict) -> dict:
    """``sweep.json`` (the rows and every call so far, with its wall time) and ``sweep.md`` (the table)."""
    old = read_json(root / "sweep.json", {})
    summary = {"rows": entries, "calls": [*old.get("calls", []), call]}
    write_json(root / "sweep.json", summary)
    lines = ["| row | " + " | ".join(reproduce.METHODS) + " | paper GTA | stages done | stage time (s) |",
             "|---|" + "---|" * (len(reproduce.METHODS) + 3)]
    for e in entries:
        scores = e.get("scores") or {}
        cells = [reproduce._fmt((scores[m]["mean"], scores[m]["std"])) if m in scores else "-"
                 for m in reproduce.METHODS]
        paper = (e.get("paper") or {}).get("gta")
        lines.append(f"| {e['label']} | " + " | ".join(cells) + f" | {reproduce._fmt(paper)} | "
                     f"{e['stages_done']}/{e['stages']} | {e['stage_wall_s']:.0f} |")
    calls = summary["calls"]
    lines += ["", f"Calls: {len(calls)}, wall time {sum(c['wall_s'] for c in calls):.0f} s in all "
              f"(this call: {call['wall_s']:.0f} s, {call['backend']}"
              + (f", GPUs {','.join(call['gpus'])} x {call['per_gpu']}" if call["gpus"] else "") + ").", ""]
    tmp = root / "sweep.md.tmp"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, root / "sweep.md")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", help="gta-data recipes (hopper-medium, pointmaze-large, ...) or "
                    "'table1' for the paper's twelve rows")
    ap.add_argument("--root", type=Path, required=True, help="the rows' workdirs go under it (reruns continue)")
    ap.add_argument("--gpu", action="store_true", help="CUDA with every fast path, as reproduce.py --gpu")
    ap.add_argument("--tiny", action="store_true", help="a CPU smoke run: reproduce.py's tiny scale")
    for option, (kind, text) in reproduce.SCALE_OPTIONS.items():
        ap.add_argument(option, type=kind, default=None, help=text and f"{text}; every row")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[:OPTION=VALUE]...",
                    help="a scale variant (repeatable): each dataset once per variant, in ROOT/NAME/DATASET, "
                    "e.g. long:diffusion-steps=200000:rl-steps=500000")
    ap.add_argument("--backend", choices=("local", "ray"), default="local",
                    help="local: this host's GPUs; ray: the machines of a Ray cluster (pip install ray)")
    ap.add_argument("--gpus", default=None, help="local: GPUs to use, a count or ids (default with --gpu: "
                    "CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists)")
    ap.add_argument("--per-gpu", type=int, default=1, help="GPU stages sharing one GPU at once")
    ap.add_argument("--cpu-jobs", type=int, default=None, help="local: CPU-only stages at once (default: a "
                    "quarter of the cores, at least 2)")
    ap.add_argument("--address", default=None, help="ray: the cluster to join, HOST:PORT or 'auto' (default: "
                    "RAY_ADDRESS's, else the one `ray start` made here, else a new one on this machine)")
    ap.add_argument("--stop-after-s", type=float, default=None,
                    help="stop the stages still running after this many seconds; a rerun continues")
    ap.add_argument("--fail-fast", action="store_true", help="a failed stage stops the whole sweep")
    ap.add_argument("--commit", default=None, help="the code's commit, for the rows (default: git rev-parse)")
    args = ap.parse_args(argv)

    given = {k: getattr(args, k) for k in reproduce.SCALE_FIELDS}
    try:
        rows = plan(args.datasets, args.root, args.tiny, given, args.variant)
    except ValueError as e:
        ap.error(str(e))
    if args.per_gpu < 1:
        ap.error("--per-gpu must be >= 1")
    if args.cpu_jobs is not None and args.cpu_jobs < 1:
        ap.error("--cpu-jobs must be >= 1")
    executor = None
    if args.backend == "ray":
        for name in ("gpus", "cpu_jobs"):
            if getattr(args, name) is not None:
                ap.error(f"--{name.replace('_', '-')} is for --backend local (Ray places the stages by the "
                         "resources of its cluster)")
        try:
            import ray  # noqa: F401  (sweep_ray imports it when it starts)
        except ImportError as e:
            ap.error(f"--backend ray needs ray (pip install ray): {e}")
        import sweep_ray
        limits = Limits()
        executor = sweep_ray.RayExecutor(args.address, per_gpu=args.per_gpu)
    else:
        if args.address is not None:
            ap.error("--address is for --backend ray")
        if args.gpus is not None and not args.gpu:
            ap.error("--gpus needs --gpu (without it every stage runs on the CPU)")
        gpus: tuple[str, ...] = ()
        if args.gpu:
            try:
                gpus = parse_gpus(args.gpus) if args.gpus is not None else detect_gpus()
            except ValueError as e:
                ap.error(str(e))
            if not gpus:
                ap.error("--gpu: no GPU found (set --gpus, or CUDA_VISIBLE_DEVICES)")
        limits = Limits(gpus=gpus, per_gpu=args.per_gpu, cpu_jobs=args.cpu_jobs or default_cpu_jobs())
    args.root.mkdir(parents=True, exist_ok=True)
    commit = args.commit or reproduce.git_commit()
    where = (f"GPUs {','.join(limits.gpus)} x {limits.per_gpu}, {limits.cpu_jobs} CPU stages at once"
             if args.backend == "local" and limits.gpus else
             f"{limits.cpu_jobs} stages at once on the CPU" if args.backend == "local" else f"Ray ({args.address or 'local'})")
    print(f"sweep of {len(rows)} rows in {args.root}: {where}", flush=True)
    summary, outcome = run_sweep(rows, args.root, args.gpu, limits, executor, stop_after_s=args.stop_after_s,
                                 keep_going=not args.fail_fast, commit=commit, backend=args.backend)
    print((args.root / "sweep.md").read_text())
    if outcome.failed:
        print(f"{len(outcome.failed)} failed (the rows they belong to are not written):", file=sys.stderr)
        for line in outcome.failed:
            print(line, file=sys.stderr)
        return 1
    if outcome.stopped:
        print("stopped: rerun the same command to continue")
        return 3
    print(f"{summary['calls'][-1]['rows_done']} rows written; the sweep in {args.root / 'sweep.json'} and "
          f"{args.root / 'sweep.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
