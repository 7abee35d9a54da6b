"""Optional copies of a run's metrics for the tools people plug runs into: CSV, TensorBoard, Weights & Biases.

The training commands of gta-rl and gta-diffusion write their metrics to append-only JSONL files, the source
of truth that resume, summaries and reports read. ``--log-to csv,tensorboard,wandb`` adds copies through one
:class:`MetricSinks` per run directory; each record is (step, kind, values, tag), where ``kind`` names the
stream (``train``, ``eval``) and ``tag`` an optional sub-run (gta-rl: ``seed_3``). Only scalar values are
copied; nested dicts are flattened with ``/`` (``targets/3600/score_mean``) and lists (per-episode scores)
stay in the JSONL.

    csv          <run>/[<tag>/]<kind>.csv beside the JSONL it mirrors; a later record with a new key rewrites
                 the file with the wider header (earlier rows leave that column empty)
    tensorboard  <run>/tensorboard/[<tag>], scalars ``<kind>/<key>`` (needs the ``tensorboard`` package and
                 torch, which the packages with the flag bring)
    wandb        one W&B run per run directory (in <run>/wandb; WANDB_MODE=offline works without an account),
                 keys ``[<tag>/]<kind>/<key>`` plotted against ``step``, so that an evaluation recorded after
                 later training steps (gta-rl's background evaluations) is kept

A resume calls :meth:`MetricSinks.rewind` with the step it restarts from, as the JSONL is truncated: CSV rows
after it are dropped, TensorBoard purges later events, and W&B starts a new run in the same group.
"""

from __future__ import annotations

import csv
import importlib.util
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SINKS = ("csv", "tensorboard", "wandb")
_NEEDS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # sink -> module it imports


class SinkError(ValueError):
    """A ``--log-to`` value that cannot be used (one-line message)."""


def parse_sinks(spec: str | Sequence[str] | None, package: str) -> tuple[str, ...]:
    """``"csv,tensorboard"`` -> ("csv", "tensorboard"), checked before anything runs: an unknown name or a
    missing optional package is a :class:`SinkError` naming the extra of ``package`` that brings it."""
    if spec is None:
        return ()
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [s for s in names if s and s != "none"]
    unknown = [s for s in names if s not in SINKS]
    if unknown:
        raise SinkError(f"--log-to: unknown sink {unknown[0]!r} (choose from {', '.join(SINKS)}, comma-separated)")
    for name in names:
        module = _NEEDS.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            raise SinkError(f"--log-to {name} needs the {module} package: pip install '{package}[{name}]'")
    return tuple(dict.fromkeys(names))


def scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The scalar entries of a record, nested dicts flattened with ``/``; None, strings and lists are left out."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(scalars(value, f"{name}/"))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class _CsvSink:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, kind: str, tag: str | None) -> Path:
        return (self.root / tag if tag else self.root) / f"{kind}.csv"

    def write(self, step: int, kind: str, values: dict[str, float], tag: str | None) -> None:
        path = self.path(kind, tag)
        row = {"step": step, **values}
        header = _read_header(path)
        if header is None or not set(row) <= set(header):
            header = [*(header or ["step"]), *(k for k in row if k not in (header or ["step"]))]
            self._rewrite(path, header, _read_rows(path))
        with path.open("a", newline="") as f:
            csv.DictWriter(f, header, restval="").writerow(row)

    @staticmethod
    def _rewrite(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, header, restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)

    def rewind(self, step: int, drop: Mapping[str, int]) -> None:
        for path in self.root.glob("**/*.csv"):
            header, rows = _read_header(path), _read_rows(path)
            kind = path.stem
            keep = [r for r in rows if int(r["step"]) <= step and int(r["step"]) != drop.get(kind, -1)]
            if header is not None and len(keep) != len(rows):
                self._rewrite(path, header, keep)

    def close(self) -> None:
        pass


def _read_header(path: Path) -> list[str] | None:
    if not path.exists():
        return None
    with path.open(newline="") as f:
        return next(csv.reader(f), None)


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class _TensorBoardSink:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.writers: dict[str | None, Any] = {}
        self.purge_step: int | None = None

    def _writer(self, tag: str | None):
        if tag not in self.writers:
            from torch.utils.tensorboard import SummaryWriter

            self.writers[tag] = SummaryWriter(str(self.root / tag if tag else self.root), purge_step=self.purge_step)
        return self.writers[tag]

    def write(self, step: int, kind: str, values: dict[str, float], tag: str | None) -> None:
        writer = self._writer(tag)
        for key, value in values.items():
            writer.add_scalar(f"{kind}/{key}", value, global_step=step)

    def rewind(self, step: int, drop: Mapping[str, int]) -> None:
        self.close()
        self.purge_step = step + 1  # TensorBoard hides the events at and after this step of earlier files

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


class _WandbSink:
    def __init__(self, root: Path, name: str, config: Mapping[str, Any] | None) -> None:
        self.root, self.name, self.config = root, name, dict(config or {})
        self.run = None

    def _open(self):
        if self.run is None:
            import wandb

            self.root.mkdir(parents=True, exist_ok=True)
            # create_new: several run directories (gta-rl's arms) log from one process at once
            self.run = wandb.init(project="gta", name=self.name, group=self.name, dir=str(self.root),
                                  config=self.config, reinit="create_new")
            self.run.define_metric("step")
            self.run.define_metric("*", step_metric="step")
        return self.run

    def write(self, step: int, kind: str, values: dict[str, float], tag: str | None) -> None:
        prefix = f"{tag}/{kind}/" if tag else f"{kind}/"
        self._open().log({"step": step, **{prefix + k: v for k, v in values.items()}})

    def rewind(self, step: int, drop: Mapping[str, int]) -> None:
        self.close()  # the next record opens a new run of the same group

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class MetricSinks:
    """The sinks chosen with ``--log-to`` for one run directory (none: every call does nothing).

    ``name`` names the W&B run and group; ``config`` is the run's resolved config, recorded by W&B."""

    def __init__(self, run_dir: str | Path, sinks: Sequence[str], *, name: str | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        run_dir = Path(run_dir)
        self.sinks: list[Any] = []
        for sink in sinks:
            if sink == "csv":
                self.sinks.append(_CsvSink(run_dir))
            elif sink == "tensorboard":
                self.sinks.append(_TensorBoardSink(run_dir / "tensorboard"))
            elif sink == "wandb":
                self.sinks.append(_WandbSink(run_dir, name or run_dir.name, config))
            else:
                raise SinkError(f"unknown sink {sink!r} (choose from {', '.join(SINKS)})")

    def write(self, step: int, kind: str, values: Mapping[str, Any], tag: str | None = None) -> None:
        """Copy one record (its scalar values; ``step`` and ``kind`` keys are not values) to every sink."""
        if not self.sinks:
            return
        flat = {k: v for k, v in scalars(values).items() if k not in ("step", "kind")}
        for sink in self.sinks:
            sink.write(int(step), kind, flat, tag)

    def rewind(self, step: int, drop: Mapping[str, int] | None = None) -> None:
        """Forget what was recorded after ``step`` (and records of kind k at step ``drop[k]``): a resume from
        the checkpoint of ``step`` writes them again."""
        for sink in self.sinks:
            sink.rewind(int(step), dict(drop or {}))

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> MetricSinks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["SINKS", "MetricSinks", "SinkError", "parse_sinks", "scalars"]
