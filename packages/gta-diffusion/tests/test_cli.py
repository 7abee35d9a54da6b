"""The gta-diffusion CLI through typer's CliRunner: train, resume, augment, presets, one-line errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from gta_data import TrajectoryStore
from gta_diffusion.cli import app

runner = CliRunner()
SMALL = ["--network", "fast-mixer-small", "--batch-size", "16", "--horizon", "4", "--warmup-steps", "2",
         "--log-every", "2", "--checkpoint-every", "3", "--device", "cpu"]


def test_train_resume_augment(tmp_path, toy_store):
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(run), "--steps", "4", *SMALL])
    assert res.exit_code == 0, res.output
    assert "new run" in res.output and (run / "checkpoints" / "step-000000004").is_dir()
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["steps"] == 4 and config["window"]["cond_scale"] == 0.01
    res = runner.invoke(app, ["train", "--out", str(run), "--steps", "4", *SMALL])
    assert res.exit_code == 0 and "resuming at step 4" in res.output, res.output
    # options a resume does not apply are named, not silently dropped; those it applies are not among them
    ignored = next(line for line in res.output.splitlines() if line.startswith("ignored on resume"))
    assert all(f"--{name}" in ignored for name in ("warmup-steps", "log-every", "checkpoint-every", "horizon"))
    assert "--steps" not in ignored and "--batch-size" not in ignored and "--network" not in ignored
    out = tmp_path / "aug.zarr"
    res = runner.invoke(app, ["augment", "--model", str(run), "--data", str(toy_store.path), "--out", str(out),
                              "--dataset-preset", "hopper-medium-replay", "--alpha", "1.2", "--reweight-clip", "5",
                              "--num-transitions", "50", "--batch-size", "8", "--num-steps", "6", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "50 transitions" in res.output and "warning" not in res.output
    # A model whose training was stopped early still augments, with a warning.
    stopped = tmp_path / "stopped"
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(stopped), "--steps", "6",
                              "--stop-after", "3", *SMALL])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["augment", "--model", str(stopped), "--data", str(toy_store.path), "--out",
                              str(tmp_path / "early.zarr"), "--num-transitions", "8", "--batch-size", "8",
                              "--num-steps", "6", "--device", "cpu"])
    assert res.exit_code == 0 and "warning: the model's training stopped at step 3 of 6" in res.output, res.output
    from gta_data import TrajectoryStore

    aug = TrajectoryStore.open(out).provenance["augment"]
    # Preset fills mu and the reweighting (Table 9: N_B = 50), the explicit --alpha wins, --guidance 2 is w = 2.
    assert (aug["mu"], aug["alpha"], aug["reweight"], aug["num_bins"], aug["guidance_weight"]) == (0.5, 1.2, "bins", 50, 2.0)
    assert aug["reweight_clip"] == 5.0  # the authors' clip of the Eq. 13 weights, recorded
    assert aug["clip_actions"] is True and TrajectoryStore.open(out).provenance["action_clip"]["fraction_clipped"] >= 0
    res = runner.invoke(app, ["augment", "--model", str(run), "--data", str(toy_store.path), "--out",
                              str(tmp_path / "raw.zarr"), "--num-transitions", "20", "--batch-size", "8",
                              "--num-steps", "6", "--device", "cpu", "--no-clip-actions"])
    assert res.exit_code == 0, res.output
    raw = TrajectoryStore.open(tmp_path / "raw.zarr").provenance
    assert raw["augment"]["clip_actions"] is False and raw["action_clip"] is None
    assert raw["augment"]["reweight_clip"] is None


@pytest.fixture(scope="module")
def hopper_store(tmp_path_factory):
    """A random-policy Hopper-v5 store: short episodes that end in true terminals (falls)."""
    from gta_data.cli import app as data_app

    path = tmp_path_factory.mktemp("hopper") / "random.zarr"
    res = runner.invoke(data_app, ["make", "random", "--env", "Hopper-v5", "--size", "2000", "--out", str(path)])
    assert res.exit_code == 0, res.output
    return TrajectoryStore.open(path)


@pytest.mark.parametrize("in_rewards", [False, True])
def test_penalty_never_reaches_a_written_store_either_way(tmp_path, hopper_store, in_rewards):
    """A.1's -100 in the condition only (default) or also in the learned reward channel (--penalty-in-rewards,
    removed before writing): no written reward is at or below penalty / 2."""
    run, out = tmp_path / "run", tmp_path / "aug.zarr"
    args = ["train", "--data", str(hopper_store.path), "--out", str(run), "--steps", "30", *SMALL]
    res = runner.invoke(app, [*args, "--penalty-in-rewards"] if in_rewards else args)
    assert res.exit_code == 0, res.output
    config = json.loads((run / "config.json").read_text())
    penalty = config["window"]["terminal_penalty"]
    assert penalty == -100.0 and config["window"]["penalty_in_reward_channel"] is in_rewards
    reward_std = config["normalizer"]["std"][hopper_store.obs_dim + hopper_store.act_dim]
    assert (reward_std > 10) is in_rewards  # the model learns the penalised rewards only in the variant
    res = runner.invoke(app, ["augment", "--model", str(run), "--data", str(hopper_store.path), "--out", str(out),
                              "--mu", "0.2", "--num-transitions", "400", "--batch-size", "50", "--num-steps", "8",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    aug = TrajectoryStore.open(out)
    gen = aug.load()
    assert gen.terminals.sum() >= 5, "the test needs generated windows that end in a terminal"
    assert gen.rewards.min() > penalty / 2, gen.rewards.min()
    assert aug.provenance["terminal_penalty"] == penalty and aug.provenance["penalty_in_rewards"] is in_rewards


def test_errors_are_one_line_with_exit_code_1(tmp_path, toy_store):
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "r"),
                              "--steps", "2", *SMALL])
    assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["augment", "--model", str(tmp_path / "nope"), "--data", str(toy_store.path),
                              "--out", str(tmp_path / "a.zarr"), "--mu", "0.5"])
    assert res.exit_code == 1 and "not a gta-diffusion run directory" in res.output
    res = runner.invoke(app, ["augment", "--model", str(tmp_path), "--data", str(toy_store.path),
                              "--out", str(tmp_path / "a.zarr"), "--mu", "1.5"])
    assert res.exit_code == 1 and "mu must be in (0, 1]" in res.output
    res = runner.invoke(app, ["augment", "--model", str(tmp_path), "--data", str(toy_store.path),
                              "--out", str(tmp_path / "a.zarr"), "--dataset-preset", "pong"])
    assert res.exit_code == 1 and "unknown dataset preset" in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) == 1
    res = runner.invoke(app, ["augment", "--model", str(tmp_path), "--data", str(toy_store.path),
                              "--out", str(toy_store.path)])
    assert res.exit_code == 1 and res.output.strip() == f"error: {toy_store.path} already exists (use --overwrite to replace it)"
    for method in ("s4rl",):  # never over its own source, even with --overwrite
        res = runner.invoke(app, ["augment", "--method", method, "--data", str(toy_store.path),
                                  "--out", str(toy_store.path), "--overwrite", "--num-transitions", "10"])
        assert res.exit_code == 1 and "is the source store" in res.output
    assert TrajectoryStore.open(toy_store.path).num_transitions == toy_store.num_transitions
    if not torch.cuda.is_available():
        res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(tmp_path / "g"),
                                  "--steps", "2", "--cuda-graph", "--device", "cpu", *SMALL])
        assert res.exit_code == 1 and "--cuda-graph needs a CUDA device" in res.output
        assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "must be positive"),  # 0 is an error, not the default
    (["--batch-size", "0"], "must be positive"),
    (["--ema-decay", "2"], "ema_decay must be in [0, 1)"),
    (["--warmup-steps", "-5"], "warmup_steps >= 0"),
    (["--stop-after", "-3"], "--stop-after must be a positive step"),
    (["--model", "synther", "--steps", "0"], "must be positive"),
])
def test_training_settings_out_of_range_are_refused(tmp_path, toy_store, extra, message):
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(tmp_path / "r"), "--device", "cpu",
                              *(["--steps", "3"] if "--steps" not in extra else []), *extra])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("fields, message", [
    ({"guidance_weight": -5.0}, "guidance weight w must be a number >= -1"),  # --guidance -5
    ({"alpha": float("inf")}, "alpha must be a positive number"),
    ({"conditioning": "fixed", "fixed_return": float("nan")}, "fixed return must be a finite number"),
    ({"num_steps": 0}, "num_steps must be an integer >= 2"),  # --num-steps 0 was the model's 128
    ({"batch_size": 0}, "must be positive"),
    ({"reweight": "bins", "reweight_clip": 0.0}, "reweighting clip must be a positive number"),
    ({"reweight": "none", "reweight_clip": 5.0}, "applies to reweight 'bins' only"),
])
def test_augment_settings_out_of_range_are_refused(fields, message):
    from gta_diffusion.augmentation import AugmentConfig
    from gta_diffusion.errors import DiffusionError

    with pytest.raises(DiffusionError, match=re.escape(message)):
        AugmentConfig(**fields).check()


def test_presets_and_help():
    res = runner.invoke(app, ["presets"])
    assert res.exit_code == 0 and "halfcheetah-medium-replay" in res.output and "num_bins=50" in res.output
    assert runner.invoke(app, ["--help"]).exit_code == 0
    assert "--mu" in runner.invoke(app, ["augment", "--help"]).output


def test_dataset_preset_lookup():
    from gta_diffusion.presets import dataset_preset

    assert dataset_preset("walker2d-medium-v2")["num_bins"] == 100  # Table 9
    assert dataset_preset("halfcheetah-medium")["reweight"] == "none"
    assert dataset_preset("maze2d-umaze-v1") == {"mu": 0.5, "alpha": 1.3, "reweight": "episodes", "success_weight": 10.0}
    assert dataset_preset("pen-human")["reweight"] == "none"


def test_run_written_with_the_old_network_names_resumes_and_augments(tmp_path, toy_store):
    """Runs started before the rename say "paper" / "small" in their config: they load, resume and augment."""
    run = tmp_path / "old"
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(run), "--steps", "6",
                              "--stop-after", "3", *SMALL])
    assert res.exit_code == 0, res.output
    config_path = run / "config.json"
    config = json.loads(config_path.read_text())
    config["train"]["preset"] = config["network"]["preset"] = "small"  # as the old code wrote it
    config_path.write_text(json.dumps(config))
    res = runner.invoke(app, ["train", "--out", str(run)])
    assert res.exit_code == 0 and "resuming at step 3" in res.output and "done: 6 steps" in res.output, res.output
    res = runner.invoke(app, ["augment", "--model", str(run), "--data", str(toy_store.path), "--out",
                              str(tmp_path / "aug.zarr"), "--num-transitions", "10", "--batch-size", "8",
                              "--num-steps", "4", "--device", "cpu"])
    assert res.exit_code == 0 and "10 transitions" in res.output, res.output
    assert json.loads(config_path.read_text())["network"]["preset"] == "small"  # the saved config is left as is
    from gta_diffusion.networks import build_network, count_parameters

    assert count_parameters(build_network("paper", 24, 32)) == count_parameters(build_network("fast-mixer", 24, 32))


@pytest.mark.parametrize("args, message", [
    (["--network", "paper"], "network 'paper' is now called 'fast-mixer'"),
    (["--network", "small"], "network 'small' is now called 'fast-mixer-small'"),
    (["--network", "huge"], "unknown network 'huge'"),
    (["--network", "synther-small"], "a GTA model needs a trajectory network"),
    (["--preset", "fast-mixer"], "No such option"),  # --preset names dataset / algorithm presets only
])
def test_network_names_are_checked(tmp_path, toy_store, args, message):
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(tmp_path / "r"), "--steps", "2",
                          "--device", "cpu", *args])
    assert res.exit_code != 0 and message in res.output, res.output
    assert not (tmp_path / "r").exists()


def test_train_mixer_unet_from_the_cli(tmp_path, toy_store):
    run = tmp_path / "gta"
    args = ["train", "--data", str(toy_store.path), "--out", str(run), "--network", "mixer-unet", "--steps", "2",
            "--batch-size", "4", "--horizon", "7", "--warmup-steps", "1", "--log-every", "1", "--device", "cpu"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "done: 2 steps" in res.output, res.output
    config = json.loads((run / "config.json").read_text())
    assert config["network"]["preset"] == config["train"]["preset"] == "mixer-unet"
    from gta_diffusion.networks import build_network, count_parameters

    assert config["network"]["parameters"] == count_parameters(build_network("mixer-unet", 3, 8))


def test_cli_and_python_api_agree_and_take_the_papers_guidance_weight(tmp_path, toy_store):
    """``gta-diffusion train/augment`` and ``gta_diffusion.train/augment`` give the same run and the same store:
    the CLI's --guidance and the library's guidance_weight are both the w of Eq. 4; the old keyword, which took
    the sampler's scale s = w + 1, is refused."""
    import numpy as np

    from gta_diffusion import AugmentConfig, TrainConfig, WindowConfig, augment, train
    from gta_diffusion.errors import DiffusionError

    with pytest.raises(DiffusionError, match=r"guidance_weight, the paper's w \(Eq. 4\).*guidance_weight=1.0"):
        AugmentConfig(guidance_scale=2.0)
    assert AugmentConfig().guidance_weight == 2.0 and AugmentConfig(guidance_weight=0.5).sampler_scale == 1.5
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(tmp_path / "cli"), "--steps", "4",
                              *SMALL])
    assert res.exit_code == 0, res.output
    trainer = train(toy_store.path, tmp_path / "py", TrainConfig(preset="fast-mixer-small", steps=4, batch_size=16,
                                                                 warmup_steps=2, log_every=2, checkpoint_every=3),
                    WindowConfig(horizon=4), device="cpu")
    assert trainer.step_count == 4
    cli_config = json.loads((tmp_path / "cli" / "config.json").read_text())
    py_config = json.loads((tmp_path / "py" / "config.json").read_text())
    assert {k: v for k, v in cli_config.items() if k != "data"} == {k: v for k, v in py_config.items() if k != "data"}
    assert (tmp_path / "cli" / "metrics.jsonl").read_text().count("\n") == 2
    small = ["--num-transitions", "20", "--batch-size", "8", "--num-steps", "6", "--device", "cpu"]
    res = runner.invoke(app, ["augment", "--model", str(tmp_path / "cli"), "--data", str(toy_store.path),
                              "--out", str(tmp_path / "cli.zarr"), "--guidance", "0.5", *small])
    assert res.exit_code == 0, res.output
    for w in (0.5, 1.5):
        augment(tmp_path / "py", toy_store.path, tmp_path / f"py-{w}.zarr",
                AugmentConfig(guidance_weight=w, num_transitions=20, batch_size=8, num_steps=6), device="cpu")
    obs = {name: TrajectoryStore.open(tmp_path / name).load().observations
           for name in ("cli.zarr", "py-0.5.zarr", "py-1.5.zarr")}
    np.testing.assert_array_equal(obs["py-0.5.zarr"], obs["cli.zarr"])
    assert not np.array_equal(obs["py-1.5.zarr"], obs["cli.zarr"])  # the weight matters
    assert TrajectoryStore.open(tmp_path / "cli.zarr").provenance["augment"]["guidance_weight"] == 0.5
