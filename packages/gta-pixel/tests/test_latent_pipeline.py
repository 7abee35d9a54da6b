"""The DrQ+BC stages on a tiny fake-rendered dataset: pretrain (and exact resume), encode (round trip against the
reference networks), finetune (frozen parts bit-identical, n-step targets by hand), evaluate (workers agree)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gta_data import TrajectoryStore, Transitions, write_store
from gta_pixel import runs
from gta_pixel.drqbc import DrQBCConfig, DrQBCNets
from gta_pixel.encode import encode
from gta_pixel.errors import RunError
from gta_pixel.evaluate import evaluate
from gta_pixel.finetune import FROZEN_PREFIXES, HEAD_PREFIXES, LatentReplay, finetune, nstep_rows
from gta_pixel.pixelstore import write_pixel_store
from gta_pixel.pretrain import pretrain
from gta_pixel.tasks import FakeTask
from gta_rl.checkpoint import load_checkpoint

TINY = DrQBCConfig(hidden_dim=32, batch_size=8)


def write_fake_pixels(path, episodes=4, max_steps=10, size=16, seed=0):
    """Random-action episodes of the fake task as a pixel store."""
    task = FakeTask(size=size, act_dim=2, state_dim=3, max_steps=max_steps)
    rng = np.random.default_rng(seed)
    frames, actions, rewards, ends = [], [], [], []
    for e in range(episodes):
        frames.append(task.reset(seed + e)[1])
        done = False
        while not done:
            a = rng.uniform(-1, 1, 2).astype(np.float32)
            _, frame, r, term, trunc = task.step(a)
            frames.append(frame)
            actions.append(a)
            rewards.append(r)
            done = term or trunc
        ends.append(len(actions))
    n = len(actions)
    timeouts = np.zeros(n, bool)
    timeouts[np.array(ends) - 1] = True
    return write_pixel_store(path, frames=np.stack(frames), actions=np.stack(actions), rewards=np.array(rewards),
                             discounts=np.ones(n), terminals=np.zeros(n, bool), timeouts=timeouts,
                             episode_ends=np.array(ends), task=task.spec)


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    path = tmp_path_factory.mktemp("pixels") / "fake.zarr"
    write_fake_pixels(path)
    return path


@pytest.fixture(scope="module")
def run(pixels, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pre"
    pretrain(pixels, out, seeds=[0, 1], steps=4, config=TINY, device="cpu", log_every=2, checkpoint_every=2)
    return out


def test_pretrain_writes_a_run_and_resumes_exactly(pixels, run, tmp_path):
    config = runs.read_config(run)
    assert config["stage"] == "pretrain" and config["seeds"] == [0, 1] and config["obs_shape"] == [9, 16, 16]
    assert config["task"]["kind"] == "fake" and config["drqbc"]["hidden_dim"] == 32
    lines = [json.loads(x) for x in (run / runs.METRICS).read_text().splitlines()]
    assert [(x["step"], x["seed"]) for x in lines] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    assert all(np.isfinite(x["critic_loss"]) for x in lines)
    # Stop at 2, resume to 4: the same tensors as the uninterrupted run.
    part = tmp_path / "part"
    pretrain(pixels, part, seeds=[0, 1], steps=2, config=TINY, device="cpu", log_every=2, checkpoint_every=2)
    with pytest.raises(Exception, match="not empty"):
        pretrain(pixels, part, seeds=[0, 1], steps=4, config=TINY, device="cpu")
    pretrain(pixels, part, steps=4, device="cpu", log_every=2, checkpoint_every=2, resume=True)
    a, _ = load_checkpoint(run / runs.CHECKPOINT)
    b, _ = load_checkpoint(part / runs.CHECKPOINT)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (part / runs.METRICS).read_text() == (run / runs.METRICS).read_text()


def test_a_start_that_saved_nothing_is_cleared_by_the_next_start(tmp_path):
    """A stage killed before its first checkpoint leaves its config and log lines: rerunning the command starts
    again (the scheduler adds --resume only where a checkpoint exists); anything else in --out is refused."""
    out = tmp_path / "pre"
    out.mkdir()
    runs.write_config(out, {"stage": "pretrain"})
    (out / runs.METRICS).write_text("{}\n")
    runs.check_out(out, resume=False)
    assert list(out.iterdir()) == []
    runs.write_config(out, {"stage": "pretrain"})
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="is not empty"):
        runs.check_out(out, resume=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / runs.CONFIG).write_text('{"format": "something else"}')
    with pytest.raises(RunError, match="is not empty"):
        runs.check_out(other, resume=False)
    assert (other / runs.CONFIG).exists()


def test_encode_round_trip_against_the_reference_networks(pixels, run, tmp_path):
    store = encode(run, pixels, tmp_path / "latent.zarr", seed=1, device="cpu", batch_size=7)
    reopened = TrajectoryStore.open(tmp_path / "latent.zarr")
    data = reopened.load()
    assert reopened.obs_dim == 100 and reopened.act_dim == 2 and store.num_transitions == 40
    assert reopened.attrs["observation_layout"] == [{"key": "z_actor", "start": 0, "stop": 50},
                                                    {"key": "z_critic", "start": 50, "stop": 100}]
    prov = reopened.provenance
    assert prov["seed"] == 1 and prov["checkpoint_sha256"] == runs.file_sha256(run / runs.CHECKPOINT)
    assert prov["latent"] == "trunk" and reopened.env_id == "pixel:fake"
    np.testing.assert_array_equal(reopened.episode_ends, [10, 20, 30, 40])
    # Within an episode the next latent is the following row's latent.
    np.testing.assert_array_equal(data.next_observations[:9], data.observations[1:10])

    # Seed 1's reference networks on hand-stacked frames: step 2 of episode 1 (frames 11 + 0..2).
    agent, _, _ = runs.load_agent(run, seeds=[1])
    nets = DrQBCNets((9, 16, 16), 2, TINY, seed=1)
    nets.load_state_dict(agent.seed_state(0))
    from gta_pixel.pixelstore import PixelStore

    frames = torch.as_tensor(PixelStore.open(pixels).frames())
    for row, stack in ((12, [11, 12, 13]), (10, [11, 11, 11]), (11, [11, 11, 12])):
        obs = frames[stack].reshape(1, 9, 16, 16).float()
        with torch.no_grad():
            f = nets.encoder(obs)
            z = torch.cat([nets.actor.trunk(f), nets.critic.trunk(f)], -1)[0]
        np.testing.assert_allclose(data.observations[row], z.numpy(), atol=1e-5)
    np.testing.assert_array_equal(data.actions, PixelStore.open(pixels).load().actions)


def test_nstep_rows_truncate_at_segment_ends():
    rows, k = nstep_rows(np.array([4, 5]), 3)
    assert k.tolist() == [3, 3, 2, 1, 1]
    assert rows.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, -1], [3, -1, -1], [4, -1, -1]]


def test_latent_replay_nstep_targets_by_hand(tmp_path):
    obs = np.arange(5, dtype=np.float32)[:, None].repeat(4, 1)
    data = Transitions(observations=obs, actions=np.zeros((5, 1)), rewards=np.array([1.0, 2, 3, 4, 5]),
                       next_observations=obs + 10, terminals=np.array([0, 0, 0, 1, 0], bool),
                       timeouts=np.array([0, 0, 0, 0, 1], bool))
    write_store(tmp_path / "s.zarr", data, np.array([4, 5]), env_id="pixel:fake")
    replay = LatentReplay([TrajectoryStore.open(tmp_path / "s.zarr")], nstep=3, discount=0.5, device=torch.device("cpu"))
    np.testing.assert_allclose(replay.rewards.numpy(), [1 + 1 + 0.75, 2 + 1.5 + 1, 3 + 2, 4, 5])
    np.testing.assert_allclose(replay.discounts.numpy(), [0.125, 0.0, 0.0, 0.0, 0.5])  # a terminal ends row 3
    np.testing.assert_array_equal(replay.next_observations[:, 0].numpy(), [12, 13, 13, 13, 14])


def test_finetune_moves_only_the_heads(pixels, run, tmp_path):
    latent = encode(run, pixels, tmp_path / "latent.zarr", device="cpu").path
    out = tmp_path / "fine"
    finetune(run, [latent, latent], out, steps=3, device="cpu", log_every=3, checkpoint_every=3)
    before, _ = load_checkpoint(run / runs.CHECKPOINT)
    after, _ = load_checkpoint(out / runs.CHECKPOINT)
    frozen = [k for k in before if k.startswith(tuple("model." + p for p in FROZEN_PREFIXES))]
    heads = [k for k in before if k.startswith(tuple("model." + p for p in HEAD_PREFIXES))]
    assert len(frozen) == 4 * 2 + 3 * 4 and len(heads) == 5 * 3 * 2  # convs; trunks (Linear, LayerNorm); heads
    assert runs.read_config(out)["seeds"] == [0]  # the seed whose encoder wrote the latents (row 0 of the run)
    for key in frozen:
        assert after[key].shape[0] == 1 and torch.equal(before[key][:1], after[key]), key
    assert all(not torch.equal(before[k][:1], after[k]) for k in heads)
    assert torch.equal(before["model.step"], after["model.step"]) and int(after["finetune.step"]) == 3
    config = runs.read_config(out)
    assert config["stage"] == "finetune" and config["base"]["checkpoint_sha256"] == runs.file_sha256(
        run / runs.CHECKPOINT)
    assert len(config["data"]) == 2
    with pytest.raises(Exception, match="obs/act dims"):  # a store that is not this run's latents
        bad = Transitions(observations=np.zeros((3, 7)), actions=np.zeros((3, 2)), rewards=np.zeros(3),
                          next_observations=np.zeros((3, 7)), terminals=np.zeros(3, bool),
                          timeouts=np.ones(3, bool))
        write_store(tmp_path / "bad.zarr", bad, np.array([3]), env_id="pixel:fake")
        finetune(run, [tmp_path / "bad.zarr"], tmp_path / "fine2", steps=1, device="cpu")


def test_finetune_resumes_exactly(pixels, run, tmp_path):
    latent = encode(run, pixels, tmp_path / "latent.zarr", device="cpu").path
    whole, part = tmp_path / "whole", tmp_path / "part"
    finetune(run, [latent], whole, steps=4, batch_size=8, device="cpu", log_every=2, checkpoint_every=2)
    finetune(run, [latent], part, steps=2, batch_size=8, device="cpu", log_every=2, checkpoint_every=2)
    finetune(run, [latent], part, steps=4, batch_size=8, device="cpu", log_every=2, checkpoint_every=2, resume=True)
    a, _ = load_checkpoint(whole / runs.CHECKPOINT)
    b, _ = load_checkpoint(part / runs.CHECKPOINT)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / runs.METRICS).read_text() == (part / runs.METRICS).read_text()


def test_finetune_of_one_seed_is_that_seed_of_the_whole_run(pixels, run, tmp_path):
    """--seeds 1: seed 1's networks, optimizer moments and random draws, as in a run of every seed (on a store
    that names no encoder: a copy of the latents without encode's provenance); encode's stores pick the seed."""
    latent = encode(run, pixels, tmp_path / "latent.zarr", seed=1, device="cpu").path
    store = TrajectoryStore.open(latent)
    plain = write_store(tmp_path / "plain.zarr", store.load(), store.episode_ends, env_id=store.env_id).path
    whole, one = tmp_path / "whole", tmp_path / "one"
    finetune(run, [plain], whole, steps=3, batch_size=8, device="cpu", log_every=3, checkpoint_every=3)
    finetune(run, [plain], one, steps=3, batch_size=8, device="cpu", log_every=3, checkpoint_every=3, seeds=[1])
    assert runs.read_config(whole)["seeds"] == [0, 1]
    # encode's own store fine-tunes seed 1 by itself, and refuses any other seed's heads.
    finetune(run, [latent], tmp_path / "by-latent", steps=1, batch_size=8, device="cpu")
    assert runs.read_config(tmp_path / "by-latent")["seeds"] == [1]
    with pytest.raises(RunError, match=r"latent.zarr holds the latents of seed 1's encoder .* \(fine-tune --seeds 1\)"):
        finetune(run, [latent], tmp_path / "bad0", steps=1, device="cpu", seeds=[0])
    latent0 = encode(run, pixels, tmp_path / "latent0.zarr", seed=0, device="cpu").path
    with pytest.raises(RunError, match=r"come from the encoders of seeds \[0, 1\]"):
        finetune(run, [latent0, latent], tmp_path / "bad01", steps=1, device="cpu")
    a, _ = load_checkpoint(whole / runs.CHECKPOINT)
    b, _ = load_checkpoint(one / runs.CHECKPOINT)
    assert a.keys() == b.keys() and runs.read_config(one)["seeds"] == [1]
    for key in a:
        if a[key].ndim and key != "model.seeds" and not key.endswith(".t"):
            assert b[key].shape[0] == 1, key
            torch.testing.assert_close(b[key][0], a[key][1], rtol=1e-5, atol=1e-6, msg=key)
    lines = [json.loads(x) for x in (one / runs.METRICS).read_text().splitlines()]
    assert [x["seed"] for x in lines] == [1]
    assert evaluate(one, episodes=1, device="cpu", max_steps=2, write=False)["seeds"].keys() == {"1"}
    with pytest.raises(RunError, match=r"has seeds \[0, 1\], not \[5\]"):
        finetune(run, [plain], tmp_path / "bad", steps=1, device="cpu", seeds=[5])


def test_a_stop_request_checkpoints_that_step_and_a_resume_continues_exactly(pixels, run, tmp_path):
    """What `gta-pixel pretrain` and `finetune` do on SIGTERM (the scheduler's --stop-after-s)."""
    part = tmp_path / "pre"
    asked = iter([False, True])
    agent = pretrain(pixels, part, seeds=[0, 1], steps=4, config=TINY, device="cpu", log_every=2,
                     checkpoint_every=10, stop=lambda: next(asked))
    assert int(agent.step) == 2 and (part / runs.CHECKPOINT).exists()
    pretrain(pixels, part, steps=4, device="cpu", log_every=2, checkpoint_every=10, resume=True)
    a, _ = load_checkpoint(run / runs.CHECKPOINT)
    b, _ = load_checkpoint(part / runs.CHECKPOINT)
    assert all(torch.equal(a[k], b[k]) for k in a)
    latent = encode(run, pixels, tmp_path / "latent.zarr", device="cpu").path
    whole, fine = tmp_path / "whole", tmp_path / "fine"
    finetune(run, [latent], whole, steps=3, batch_size=8, device="cpu", log_every=3, checkpoint_every=3)
    tuner = finetune(run, [latent], fine, steps=3, batch_size=8, device="cpu", log_every=3, checkpoint_every=10,
                     stop=lambda: True)
    assert int(tuner.step) == 1
    finetune(run, [latent], fine, steps=3, batch_size=8, device="cpu", log_every=3, checkpoint_every=10, resume=True)
    a, _ = load_checkpoint(whole / runs.CHECKPOINT)
    b, _ = load_checkpoint(fine / runs.CHECKPOINT)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_in_process_and_in_workers_agree(run, tmp_path):
    local = evaluate(run, episodes=2, workers=0, device="cpu", max_steps=6, write=False)
    pooled = evaluate(run, episodes=2, workers=2, device="cpu", max_steps=6)
    assert local["seeds"] == pooled["seeds"] and set(local["seeds"]) == {"0", "1"}
    assert len(local["seeds"]["0"]["returns"]) == 2 and local["mean_score"] is None  # fake: no ref scores
    assert json.loads((run / runs.EVAL).read_text())["episodes"] == 2


@pytest.fixture(scope="module")
def bf16_run(pixels, tmp_path_factory):
    """A one-seed run pretrained under bf16 autocast (CPU autocast runs it)."""
    out = tmp_path_factory.mktemp("runs") / "pre-bf16"
    pretrain(pixels, out, seeds=[0], steps=2, config=TINY, device="cpu", bf16=True, log_every=2, checkpoint_every=2)
    return out


def test_encode_and_evaluate_compute_in_the_runs_recorded_arithmetic(pixels, run, bf16_run, tmp_path):
    assert runs.run_bf16(runs.read_config(bf16_run)) and not runs.run_bf16(runs.read_config(run))
    assert not runs.run_bf16({}) and runs.load_agent(bf16_run)[0].bf16 and not runs.load_agent(run)[0].bf16
    latent = TrajectoryStore.open(encode(bf16_run, pixels, tmp_path / "z.zarr", device="cpu").path)
    assert latent.provenance["arithmetic"] == {"bf16": True}
    # The stored latents are the bf16 ones, measurably not the fp32 ones of the same networks.
    from gta_pixel.encode import frame_stacks, latents
    from gta_pixel.pixelstore import PixelStore, frame_rows

    agent, _, _ = runs.load_agent(bf16_run)
    store = PixelStore.open(pixels)
    frames, stacks = torch.as_tensor(store.frames()), frame_stacks(store.episode_ends, store.frame_stack)
    rows = frame_rows(store.episode_ends)
    z_bf16 = latents(agent, frames, stacks)
    agent.bf16 = False
    z_fp32 = latents(agent, frames, stacks)
    observations = latent.load().observations
    np.testing.assert_array_equal(observations, z_bf16[rows])
    assert np.abs(observations - z_fp32[rows]).max() > 1e-4
    # evaluate acts in it too, and says so.
    assert evaluate(bf16_run, episodes=1, device="cpu", max_steps=2, write=False)["arithmetic"] == {"bf16": True}
    assert evaluate(run, episodes=1, device="cpu", max_steps=2, write=False)["arithmetic"] == {"bf16": False}


def test_finetune_keeps_the_arithmetic_and_refuses_latents_of_another(pixels, run, bf16_run, tmp_path):
    fp32_latent = encode(run, pixels, tmp_path / "z32.zarr", device="cpu").path
    bf16_latent = encode(bf16_run, pixels, tmp_path / "z16.zarr", device="cpu").path
    with pytest.raises(RunError, match=r"z32.zarr was encoded without bf16 but .* computes in bf16"):
        finetune(bf16_run, [bf16_latent, fp32_latent], tmp_path / "bad", steps=1, device="cpu")
    finetune(bf16_run, [bf16_latent], tmp_path / "fine", steps=1, device="cpu", log_every=1, checkpoint_every=1)
    assert runs.run_bf16(runs.read_config(tmp_path / "fine"))  # evaluate of the fine-tuned run: bf16 as well


def test_pretrain_resume_keeps_the_runs_arithmetic(pixels, tmp_path):
    out = tmp_path / "pre"
    pretrain(pixels, out, seeds=[0], steps=1, config=TINY, device="cpu", bf16=True, log_every=1, checkpoint_every=1)
    with pytest.raises(RunError, match=r"pretrained with bf16; a resume keeps a run's arithmetic \(pass --bf16"):
        pretrain(pixels, out, steps=2, device="cpu", bf16=False, resume=True)
    agent = pretrain(pixels, out, steps=2, device="cpu", log_every=1, checkpoint_every=1, resume=True)
    assert agent.bf16 and runs.run_bf16(runs.read_config(out)) and int(agent.step) == 2


def test_finetune_continues_the_heads_adam_state_of_the_base_run(pixels, run, tmp_path):
    from gta_pixel.finetune import HeadTuner

    agent, _, state = runs.load_agent(run)
    tuner = HeadTuner(agent)
    tuner.continue_moments(state)
    # By name: the policy head's parameters follow the actor trunk's 4 in the actor's optimizer, the Q heads'
    # the critic trunk's 4 in the critic's.
    actor_names = [n for n, _ in agent.actor.named_parameters()]
    critic_names = [n for n, _ in agent.critic.named_parameters()]
    policy_names = [f"policy.{n}" for n, _ in agent.actor.policy.named_parameters()]
    q_names = [f"Q1.{n}" for n, _ in agent.critic.Q1.named_parameters()] + [
        f"Q2.{n}" for n, _ in agent.critic.Q2.named_parameters()]
    for opt, source, names, all_names in ((tuner.optimizers["policy"], "actor", policy_names, actor_names),
                                          (tuner.optimizers["q"], "critic", q_names, critic_names)):
        assert torch.equal(opt.t, state[f"optim.{source}.t"]) and int(opt.t) == 4
        for j, name in enumerate(names):
            i = all_names.index(name)
            assert torch.equal(opt.m[j], state[f"optim.{source}.m.{i}"]) and opt.m[j].abs().sum() > 0, name
            assert torch.equal(opt.v[j], state[f"optim.{source}.v.{i}"]), name

    latent = encode(run, pixels, tmp_path / "latent.zarr", device="cpu").path
    kept, fresh = tmp_path / "kept", tmp_path / "fresh"
    finetune(run, [latent], kept, steps=2, device="cpu", log_every=2, checkpoint_every=2)
    finetune(run, [latent], fresh, steps=2, device="cpu", log_every=2, checkpoint_every=2, fresh_optimizer=True)
    a, _ = load_checkpoint(kept / runs.CHECKPOINT)
    b, _ = load_checkpoint(fresh / runs.CHECKPOINT)
    assert int(a["optim.policy.t"]) == int(a["optim.q.t"]) == 6 and int(b["optim.policy.t"]) == 2
    assert not torch.equal(a["model.actor.policy.0.weight"], b["model.actor.policy.0.weight"])
    assert runs.read_config(kept)["optimizer"] == "continued" and runs.read_config(fresh)["optimizer"] == "fresh"
    # Fine-tuning a fine-tuned run continues the heads' own moments.
    again = tmp_path / "again"
    finetune(kept, [latent], again, steps=1, device="cpu", log_every=1, checkpoint_every=1)
    c, _ = load_checkpoint(again / runs.CHECKPOINT)
    assert int(c["optim.policy.t"]) == 7 and int(c["optim.q.t"]) == 7


def test_fresh_first_step_moves_heads_by_the_learning_rate(pixels, run, tmp_path):
    """Why continuing is the default: a fresh Adam's first step is lr sign(g) on every head weight."""
    from gta_pixel.finetune import HeadTuner, LatentReplay

    latent = encode(run, pixels, tmp_path / "latent.zarr", device="cpu").path
    replay = LatentReplay([TrajectoryStore.open(latent)], nstep=3, discount=0.99, device=torch.device("cpu"))
    moved = {}
    for kind in ("fresh", "continued"):
        agent, _, state = runs.load_agent(run)
        tuner = HeadTuner(agent)
        if kind == "continued":
            tuner.continue_moments(state)
        before = agent.actor.policy[0].weight.detach().clone()
        tuner.train_step(replay, 8)
        moved[kind] = (agent.actor.policy[0].weight.detach() - before).abs()
    lr = TINY.lr
    fresh = moved["fresh"].numpy()
    assert fresh.max() <= lr * (1 + 1e-4) and np.median(fresh) == pytest.approx(lr, rel=1e-3)
    assert moved["continued"].mean() < moved["fresh"].mean()
