"""Train the three locomotion behaviour policies (HalfCheetah-v5, Hopper-v5, Walker2d-v5) at once on one GPU
across device calls of a few minutes each (issue 27).

The SAC runs are processes of their own (``start`` launches one per env in a new process session, so they
outlive the command that started them and run on while the machine is held), each stopping at its
``--minutes`` deadline with a checkpoint, and resumable from the small files (``gta_rl.behaviour``:
``resume.safetensors`` + ``actions.safetensors``; the buffer is re-simulated from the recorded actions).
``pack`` bundles one env's small files (config, state, actions, logs and the actor checkpoints that D4RL's
medium/expert choice can still pick) as ``<env>.tar.xz.NN`` parts of at most 15 MiB, to come back from a
call; ``unpack`` puts them in place on a fresh machine. ``export`` writes the policy and medium-replay files
once the runs have finished. The training, the export and the run options are those of
``tools/train_behaviour_policies.py`` (its ``train_run``, ``export_run`` and parent parsers): this tool adds
the processes that outlive a call and the packing.

    # call 1 (a fresh machine): start, watch, bring the state back
    python tools/behaviour_session.py start --minutes 27 --overlap --compile --cuda-graph --env-async --num-envs 4
    python tools/behaviour_session.py wait --minutes 9
    # calls 2, 3: python tools/behaviour_session.py wait --minutes 9   (the runs go on between calls)
    # last call of the session: one env per call if the parts exceed the 64 MiB a call brings back
    python tools/behaviour_session.py pack --env halfcheetah --out $OUT
    # next session, a fresh machine, the parts carried in runs/incoming/: unpack, then start again
    python tools/behaviour_session.py unpack --from runs/incoming && python tools/behaviour_session.py start ...
    # CPU dry run (tiny networks, seconds): the whole cycle, start to export
    python tools/behaviour_session.py start --quick --env hopper --run-dir /tmp/bs --stop-after 300

Settings given to ``start`` are those of the run (they must match on later starts; execution settings such
as ``--overlap`` may change). ``status`` prints each run's step, last evaluation and whether it is running.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_behaviour_policies as one_shot  # noqa: E402
from train_behaviour_policies import ENVS  # noqa: E402

SMALL = ("config.json", "resume.safetensors", "actions.safetensors", "checkpoints.jsonl", "metrics.jsonl")
PART = 15 * 2**20  # bytes per packed part (a call brings back files of at most 16 MiB)
# The dry run: shorter than the one-shot tool's, two env copies, stopped and resumed within seconds.
QUICK = {**one_shot.QUICK, "total_steps": 600, "learning_starts": 200, "checkpoint_every": 150, "num_envs": 2}


def pid_file(run: Path) -> Path:
    return run.with_name(f"{run.name}.pid")  # beside the run directory, which holds the run's files only


def running(run: Path) -> bool:
    """Whether the process ``start`` launched for ``run`` is alive (a zombie, exited but not yet reaped where no
    init reaps orphans, is not)."""
    try:
        pid = int(pid_file(run).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the signal check is all there is
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cmd_start(a: argparse.Namespace) -> None:
    for family in a.env or list(ENVS):
        run = Path(a.run_dir) / family
        if running(run):
            print(f"{family}: running already")
            continue
        run.parent.mkdir(parents=True, exist_ok=True)
        log_path = run.with_name(f"{family}.log")
        spec = {"env_id": ENVS[family], "run": str(run), "sac": one_shot.sac_settings(a, QUICK),
                "stop_after": a.stop_after, "deadline": time.time() + 60.0 * a.minutes if a.minutes else None,
                "threads": a.threads}
        with open(log_path, "a") as log:
            proc = subprocess.Popen([sys.executable, __file__, "_train", json.dumps(spec)], stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        pid_file(run).write_text(str(proc.pid))
        print(f"{family}: started (pid {proc.pid}, log {log_path})")


def cmd_train(spec_json: str) -> None:
    """One run (the process ``start`` launches): resume where the run directory has a state."""
    from gta_rl.behaviour import SACConfig

    spec = json.loads(spec_json)
    run = Path(spec["run"])
    cfg = SACConfig(env_id=spec["env_id"], **spec["sac"])
    t0 = time.time()
    result = one_shot.train_run(cfg, run, resume=one_shot.resumable(run), stop_after=spec["stop_after"],
                                deadline=spec["deadline"], threads=spec["threads"])
    last = result["checkpoints"][-1] if result["checkpoints"] else {}
    print(json.dumps({"step": result["step"], "updates": result["updates"], "wall_s": round(time.time() - t0, 1),
                      "last_eval_return": last.get("eval_return")}), flush=True)


def status(run: Path) -> dict[str, Any]:
    from gta_data.jsonl import read_jsonl

    row: dict[str, Any] = {"env": run.name, "running": running(run)}
    for name, keys in (("metrics.jsonl", ("step", "steps_per_s")), ("checkpoints.jsonl", ("eval_return",))):
        path = run / name
        records = read_jsonl(path) if path.exists() else []
        if records:
            row.update({k: records[-1].get(k) for k in keys})
    return row


def cmd_status(a: argparse.Namespace) -> list[dict[str, Any]]:
    runs = [Path(a.run_dir) / f for f in a.env or list(ENVS)]
    rows = [status(run) for run in runs if run.exists() or pid_file(run).exists()]
    for row in rows:
        print(json.dumps(row))
    return rows


def cmd_wait(a: argparse.Namespace) -> None:
    """Watch the runs until they have all stopped or ``--minutes`` have passed."""
    end = time.time() + 60.0 * a.minutes
    while True:
        rows = cmd_status(a)
        if not any(r["running"] for r in rows) or time.time() >= end:
            return
        time.sleep(min(a.every, max(end - time.time(), 0.1)))


def actors_to_keep(checkpoints: list[dict[str, Any]], medium_return: float | None) -> set[str]:
    """The actor files D4RL's choice (gta_rl.behaviour.pick_checkpoints) can still pick after more checkpoints:
    the best so far (expert, unless beaten later), the medium candidates (closest to the medium target among
    all checkpoints, and among those up to the best; target 1/3 of the best without ``medium_return``), and
    the latest."""
    from gta_rl.behaviour import pick_checkpoints

    if not checkpoints:
        return set()
    keep = {checkpoints[-1]["path"]}
    picks = pick_checkpoints(checkpoints, medium_return=medium_return)
    keep |= {picks["expert"]["path"], picks["medium"]["path"]}
    target = picks["expert"]["eval_return"] / 3.0 if medium_return is None else medium_return
    keep.add(min(checkpoints, key=lambda c: abs(c["eval_return"] - target))["path"])
    return keep


def cmd_pack(a: argparse.Namespace) -> None:
    from gta_data.jsonl import read_jsonl
    from gta_data.scores import D4RL_DATASET_STATS

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for family in a.env or list(ENVS):
        run = Path(a.run_dir) / family
        if running(run):
            raise SystemExit(f"error: {family} is still running in {run}: `wait` for it (or its --minutes) first")
        if not (run / "resume.safetensors").exists():
            print(f"{family}: nothing to pack (no resume.safetensors)")
            continue
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:xz") as tar:
            # The state first: files written after it (a newer actions record, newer log lines) are harmless,
            # older ones are not.
            for name in SMALL:
                if (run / name).exists():
                    tar.add(run / name, arcname=f"{family}/{name}")
            medium = (D4RL_DATASET_STATS.get(f"{family}-medium") or {}).get("mean_return")
            for path in sorted(actors_to_keep(read_jsonl(run / "checkpoints.jsonl"), medium)):
                tar.add(run / path, arcname=f"{family}/{path}")
        data = buf.getvalue()
        for old in out.glob(f"{family}.tar.xz.*"):
            old.unlink()
        parts = [data[i:i + PART] for i in range(0, len(data), PART)] or [b""]
        for i, part in enumerate(parts):
            tmp = out / f".{family}.tar.xz.{i:02d}.tmp"
            tmp.write_bytes(part)
            tmp.rename(out / f"{family}.tar.xz.{i:02d}")
        print(f"{family}: {len(data) / 2**20:.1f} MiB in {len(parts)} part(s) in {out}")


def cmd_unpack(a: argparse.Namespace) -> None:
    src = Path(a.src)
    for family in a.env or list(ENVS):
        parts = sorted(src.glob(f"{family}.tar.xz.*"))
        if not parts:
            continue
        run = Path(a.run_dir) / family
        if running(run):
            raise SystemExit(f"error: {family} is running in {run}: stop it before unpacking over it")
        numbers = [p.name.rsplit(".", 1)[-1] for p in parts]
        if numbers != [f"{i:02d}" for i in range(len(parts))]:
            raise SystemExit(f"error: the parts of {family} in {src} are {', '.join(numbers)}: one is missing")
        data = b"".join(p.read_bytes() for p in parts)
        try:
            tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:xz")
            names = tar.getnames()
        except (tarfile.TarError, EOFError, lzma.LZMAError) as exc:
            raise SystemExit(f"error: the parts of {family} in {src} are not a whole archive ({exc})") from None
        with tar:
            if any(not n.startswith(f"{family}/") or ".." in Path(n).parts for n in names):
                raise SystemExit(f"error: {parts[0]} holds paths outside {family}/")
            # The full state there is older than these small files or from another run: it must not win.
            (run / "state.safetensors").unlink(missing_ok=True)
            tar.extractall(Path(a.run_dir), filter="data")
        print(f"{family}: {len(names)} files from {len(parts)} part(s) into {run}")


def cmd_export(a: argparse.Namespace) -> None:
    """The policy and medium-replay files of finished runs (tools/train_behaviour_policies.py's export_run): a run
    resumed from the small files first re-simulates its buffer (and saves the full state it reads)."""
    from gta_rl.behaviour import SACConfig

    results = []
    for family in a.env or list(ENVS):
        run = Path(a.run_dir) / family
        if running(run):
            raise SystemExit(f"error: {family} is still running in {run}: `wait` for it (or its --minutes) first")
        if not (run / "config.json").exists():
            raise SystemExit(f"error: no run of {family} in {run}")
        saved = json.loads((run / "config.json").read_text())
        cfg = SACConfig(**{**saved, "hidden": tuple(saved["hidden"]), "device": a.device})
        # a dry run (its saved networks are QUICK's) counts as a smoke run
        policy_dir = one_shot.policy_dir_for(a.policy_dir, Path(a.run_dir), smoke=cfg.hidden == tuple(QUICK["hidden"]))
        result = one_shot.train_run(cfg, run, resume=True, stop_after=0)
        if result["step"] < cfg.total_steps:
            print(f"{family}: step {result['step']} of {cfg.total_steps}: exporting what it has")
        exported = one_shot.export_run(family, run, result["checkpoints"], policy_dir, a.medium)
        results.append({"env": family, "env_id": cfg.env_id, "steps": result["step"], **exported})
        print(json.dumps(results[-1]))
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_train":
        cmd_train(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = one_shot.place_options()
    run_opts = one_shot.run_options(num_envs=4, state_every=10_000_000, quick=QUICK)
    start = sub.add_parser("start", parents=[common, run_opts], help="launch the runs not running (resuming)")
    start.add_argument("--stop-after", type=int, default=None, help="each run stops after this many more steps")
    start.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    sub.add_parser("status", parents=[common], help="each run's step, evaluation, running or not")
    wait = sub.add_parser("wait", parents=[common], help="watch until the runs stop or --minutes pass")
    wait.add_argument("--minutes", type=float, required=True)
    wait.add_argument("--every", type=float, default=30.0, help="seconds between status lines")
    pack = sub.add_parser("pack", parents=[common], help="the small files as <env>.tar.xz.NN parts")
    pack.add_argument("--out", required=True)
    unpack = sub.add_parser("unpack", parents=[common], help="put packed parts in place")
    unpack.add_argument("--from", dest="src", required=True)
    export = sub.add_parser("export", parents=[common, one_shot.export_options()],
                            help="policy and medium-replay files of the runs")
    export.add_argument("--device", default="auto", help="where the buffer is re-simulated and read")
    export.add_argument("--out", required=True, help="JSON results")
    a = ap.parse_args()
    {"start": cmd_start, "status": cmd_status, "wait": cmd_wait, "pack": cmd_pack, "unpack": cmd_unpack,
     "export": cmd_export}[a.cmd](a)


if __name__ == "__main__":
    main()
