"""The DrQ+BC stages through the CLI, end to end on a tiny fake-rendered dataset (pretrain, encode, gta-diffusion
train and augment on the latent store unchanged, finetune on original + GTA latents, evaluate), the bench's quick
mode, and one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gta_data import TrajectoryStore
from gta_diffusion.cli import app as diffusion_app
from gta_pixel import runs
from gta_pixel.cli import app

runner = CliRunner()
TINY_RUN = ["--batch-size", "8", "--device", "cpu", "--log-every", "10", "--checkpoint-every", "10"]


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    """4 random-action episodes of 20 steps of the fake task at 16 px, made by `gta-pixel make`."""
    path = tmp_path_factory.mktemp("cli") / "fake.zarr"
    _ok(runner.invoke(app, ["make", "fake", "random", "--out", str(path), "--episodes", "4", "--size", "16"]))
    return path


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def test_pipeline_end_to_end(pixels, tmp_path):
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    latent, model, gta = tmp_path / "latent.zarr", tmp_path / "model", tmp_path / "gta.zarr"
    out = _ok(runner.invoke(app, ["pretrain", str(pixels), "--out", str(pre), "--steps", "20", "--seeds", "0-1",
                                  "--hidden-dim", "32", *TINY_RUN]))
    assert "20 updates of seeds [0, 1]" in out
    assert json.loads((pre / runs.CONFIG).read_text())["drqbc"]["std_duration"] == 250_000  # V-D4RL's, by default
    out = _ok(runner.invoke(app, ["encode", str(pre), str(pixels), "--out", str(latent), "--seed", "1",
                                  "--device", "cpu"]))
    assert "80 transitions in 4 episodes, 100-d latents" in out
    _ok(runner.invoke(diffusion_app, ["train", "--data", str(latent), "--out", str(model), "--steps", "4",
                                      "--network", "fast-mixer-small", "--batch-size", "8", "--horizon", "4",
                                      "--warmup-steps", "2", "--log-every", "2", "--checkpoint-every", "4",
                                      "--device", "cpu"]))
    _ok(runner.invoke(diffusion_app, ["augment", "--model", str(model), "--data", str(latent), "--out", str(gta),
                                      "--dataset-preset", "vd4rl-medium", "--num-transitions", "40",
                                      "--batch-size", "8", "--num-steps", "4", "--device", "cpu"]))
    assert TrajectoryStore.open(gta).obs_dim == 100
    out = _ok(runner.invoke(app, ["finetune", str(pre), "--data", str(latent), "--data", str(gta), "--out",
                                  str(fine), "--steps", "20", "--seeds", "1", *TINY_RUN]))  # seed 1's latents
    assert "20 head updates of seeds [1] on 2 store(s)" in out
    out = _ok(runner.invoke(app, ["evaluate", str(fine), "--episodes", "1", "--max-steps", "5", "--device", "cpu"]))
    assert "seed 1: return" in out and "seed 0: return" not in out
    result = json.loads((fine / runs.EVAL).read_text())
    assert result["stage"] == "finetune" and result["max_steps"] == 5


def test_bench_quick(tmp_path):
    out = _ok(runner.invoke(app, ["bench", "--quick", "--device", "cpu", "--steps", "1", "--warmup", "0",
                                  "--seeds", "1", "--mode", "reference", "--mode", "stacked", "--json",
                                  str(tmp_path / "b.json")]))
    assert "reference" in out and "stacked" in out
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["reference", "stacked"] and all(r["seed_updates_per_s"] > 0 for r in rows)


def test_one_line_errors(pixels, tmp_path):
    res = runner.invoke(app, ["encode", str(tmp_path / "nowhere"), str(pixels), "--out", str(tmp_path / "z.zarr")])
    assert res.exit_code == 1 and "holds no gta-pixel run" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["pretrain", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "r"), "--steps", "1",
                              "--device", "cpu"])
    assert res.exit_code == 1 and "no pixel store" in res.output
    res = runner.invoke(app, ["pretrain", str(pixels), "--out", str(tmp_path / "r"), "--seeds", "2-1"])
    assert res.exit_code == 1 and "runs backwards" in res.output
    res = runner.invoke(app, ["pretrain", str(pixels), "--out", str(tmp_path / "r"), "--std-duration", "0",
                              "--device", "cpu"])
    assert res.exit_code == 1 and "must be positive" in res.output and not (tmp_path / "r").exists()
    res = runner.invoke(app, ["finetune", str(tmp_path / "r"), "--out", str(tmp_path / "f")])
    assert res.exit_code == 1 and "error:" in res.output
    res = runner.invoke(app, ["bench", "--device", "cuda:7"])
    assert res.exit_code == 1 and "error:" in res.output
