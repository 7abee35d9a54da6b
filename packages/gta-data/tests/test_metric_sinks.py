"""The --log-to sinks: CSV rows equal the records, TensorBoard events read back, W&B calls, resume rewinds."""

from __future__ import annotations

import csv
import importlib.machinery
import importlib.util
import sys
import types

import pytest

from gta_data.metric_sinks import MetricSinks, SinkError, parse_sinks, scalars


def _rows(path):
    with path.open(newline="") as f:
        return [{k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(f)]


def test_parse_sinks():
    assert parse_sinks(None, "gta-rl") == () and parse_sinks("", "gta-rl") == ()
    assert parse_sinks("CSV, csv", "gta-rl") == ("csv",)
    with pytest.raises(SinkError, match="unknown sink 'jsonl'"):
        parse_sinks("csv,jsonl", "gta-rl")


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SinkError, match=r"pip install 'gta-diffusion\[wandb\]'") as err:
        parse_sinks("csv,wandb", "gta-diffusion")
    assert "\n" not in str(err.value)


def test_scalars_flatten_dicts_and_leave_out_lists():
    record = {"step": 5, "loss": 0.5, "n": 3, "ok": True, "scores": [1.0, 2.0], "rate": None,
              "targets": {"3600": {"score_mean": 7.0}}}
    assert scalars(record) == {"step": 5.0, "loss": 0.5, "n": 3.0, "targets/3600/score_mean": 7.0}


def test_csv_equals_the_records_and_widens_its_header(tmp_path):
    records = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25, "grad_norm": 1.5}, {"step": 3, "loss": 0.125}]
    with MetricSinks(tmp_path, ["csv"]) as sinks:
        for r in records:
            sinks.write(r["step"], "train", r, tag="seed_0")
        sinks.write(2, "eval", {"score_mean": 40.0}, tag="seed_0")
    assert _rows(tmp_path / "seed_0" / "train.csv") == [
        {"step": 1.0, "loss": 0.5, "grad_norm": None}, {"step": 2.0, "loss": 0.25, "grad_norm": 1.5},
        {"step": 3.0, "loss": 0.125, "grad_norm": None}]
    assert _rows(tmp_path / "seed_0" / "eval.csv") == [{"step": 2.0, "score_mean": 40.0}]


def test_rewind_drops_what_a_resume_writes_again(tmp_path):
    sinks = MetricSinks(tmp_path, ["csv"])
    for step in (10, 20, 30):
        sinks.write(step, "train", {"loss": step / 10})
        sinks.write(step, "eval", {"score": step})
    sinks.rewind(20, {"eval": 20})  # resumed from step 20, whose evaluation ran in the background
    assert [r["step"] for r in _rows(tmp_path / "train.csv")] == [10, 20]
    assert [r["step"] for r in _rows(tmp_path / "eval.csv")] == [10]


def test_tensorboard_events_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("torch")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricSinks(tmp_path, ["tensorboard"]) as sinks:
        for step in (100, 200, 300):
            sinks.write(step, "train", {"loss": 1.0 / step, "time": 5.0}, tag="seed_1")
        sinks.rewind(200)
        sinks.write(300, "train", {"loss": 0.5}, tag="seed_1")  # the resumed run's step 300
    acc = EventAccumulator(str(tmp_path / "tensorboard" / "seed_1"))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [100, 200, 300]
    assert [e.value for e in loss] == pytest.approx([1 / 100, 1 / 200, 0.5])


class _FakeRun:
    def __init__(self, calls, kwargs):
        self.calls = calls
        calls.append(("init", kwargs))

    def define_metric(self, name, **kwargs):
        self.calls.append(("define_metric", name, kwargs))

    def log(self, data):
        self.calls.append(("log", data))

    def finish(self):
        self.calls.append(("finish",))


@pytest.fixture
def fake_wandb(monkeypatch):
    calls = []
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    module.init = lambda **kwargs: _FakeRun(calls, kwargs)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def test_wandb_logs_against_the_step_and_starts_a_new_run_on_resume(tmp_path, fake_wandb):
    assert parse_sinks("wandb", "gta-rl") == ("wandb",)
    with MetricSinks(tmp_path / "run", ["wandb"], config={"steps": 3}) as sinks:
        sinks.write(2, "train", {"loss": 0.5}, tag="seed_0")
        sinks.write(1, "eval", {"score_mean": 3.0}, tag="seed_0")  # an evaluation recorded late
        sinks.rewind(2)
        sinks.write(3, "train", {"loss": 0.25})
    inits = [c[1] for c in fake_wandb if c[0] == "init"]
    assert len(inits) == 2 and inits[0]["name"] == "run" and inits[0]["config"] == {"steps": 3}
    assert inits[0]["dir"] == str(tmp_path / "run") and inits[0]["reinit"] == "create_new"
    assert ("define_metric", "*", {"step_metric": "step"}) in fake_wandb
    logs = [c[1] for c in fake_wandb if c[0] == "log"]
    assert logs == [{"step": 2, "seed_0/train/loss": 0.5}, {"step": 1, "seed_0/eval/score_mean": 3.0},
                    {"step": 3, "train/loss": 0.25}]
    assert [c[0] for c in fake_wandb].count("finish") == 2
