"""Random streams, stacked networks, Adam, seed lists, the data buffer and the F.2 summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gta_data import StoreError, Transitions, write_store
from gta_rl.buffer import OfflineData, RewardTransform, load_training_data
from gta_rl.nets import BF16, Arithmetic, StackedMLP, lowp_affine, mlp_generators, stacked_affine
from gta_rl.optim import Adam, bias_correction, cosine_schedule
from gta_rl.rng import SeedStreams
from gta_rl.seeds import SeedSpecError, parse_seeds
from gta_rl.summary import summarize


def streams(seeds, step=0):
    return SeedStreams(torch.tensor(seeds), torch.tensor(step))


def test_streams_depend_on_seed_step_stream_only():
    a = streams([0, 5, 9], step=3)
    b = streams([5], step=3)
    torch.testing.assert_close(a.uniform(7, (100,))[1], b.uniform(7, (100,))[0], rtol=0, atol=0)
    assert not torch.equal(a.uniform(7, (100,)), streams([0, 5, 9], step=4).uniform(7, (100,)))
    assert not torch.equal(a.uniform(7, (100,)), a.uniform(8, (100,)))
    assert not torch.equal(a.uniform(7, (100,))[0], a.uniform(7, (100,))[1])


def test_stream_distributions():
    s = streams([0, 1], step=11)
    u = s.uniform(1, (200_000,))
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    z = s.normal(2, (200_000,))
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert abs((z.abs() < 1).float().mean().item() - 0.6827) < 0.005
    k = s.randint(3, 7, (70_000,))
    assert k.min() == 0 and k.max() == 6
    counts = torch.bincount(k.flatten(), minlength=7).double()
    chi2 = (((counts - counts.mean()) ** 2) / counts.mean()).sum().item()
    assert chi2 < 30  # 6 dof: p ~ 4e-5
    with pytest.raises(ValueError):
        s.randint(3, 0, (4,))


def test_stacked_mlp_matches_per_member_linear_and_seed_init():
    net = StackedMLP(mlp_generators([3, 8], "x"), [4, 16, 2])
    alone = StackedMLP(mlp_generators([8], "x"), [4, 16, 2])
    torch.testing.assert_close(net.layers[0].weight[1], alone.layers[0].weight[0], rtol=0, atol=0)
    x = torch.randn(2, 5, 4)
    ref = []
    for m in range(2):
        lin1 = torch.nn.Linear(4, 16)
        lin2 = torch.nn.Linear(16, 2)
        with torch.no_grad():
            lin1.weight.copy_(net.layers[0].weight[m].t())
            lin1.bias.copy_(net.layers[0].bias[m, 0])
            lin2.weight.copy_(net.layers[1].weight[m].t())
            lin2.bias.copy_(net.layers[1].bias[m, 0])
        ref.append(lin2(torch.relu(lin1(x[m]))))
    torch.testing.assert_close(net(x), torch.stack(ref))
    # nn.Linear's default bound 1/sqrt(fan_in).
    assert net.layers[0].weight.abs().max() <= 0.5


@pytest.mark.parametrize("out", [1, 3])
def test_stacked_affine_compiled_head_matches_bmm_float64(out):
    # Compiled, a one-output layer is a multiply-and-sum (fusable with the ReLU before it), not a bmm.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, dtype=torch.float64, generator=g)
    w = torch.randn(3, 5, out, dtype=torch.float64, generator=g)
    b = torch.randn(3, 1, out, dtype=torch.float64, generator=g)
    ops = []

    def backend(gm, _inputs):
        ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    def loss(x, w, b):
        return (stacked_affine(torch.relu(x), w, b) ** 2).sum()

    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    compiled = torch.compile(loss, backend=backend, fullgraph=True)
    value = compiled(*leaves)
    value.backward()
    expected = (torch.bmm(torch.relu(ref[0]), ref[1]) + ref[2]).pow(2).sum()
    expected.backward()
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    for a, e in zip(leaves, ref, strict=True):
        torch.testing.assert_close(a.grad, e.grad, rtol=1e-12, atol=1e-12)
    assert any("bmm" in op for op in ops) == (out != 1), ops
    torch.testing.assert_close(stacked_affine(x, w, b), torch.bmm(x, w) + b, rtol=0, atol=0)  # eager: bmm
    torch._dynamo.reset()


@pytest.mark.parametrize("k", [17, 16])
def test_lowp_affine_matches_bf16_rounded_float64_reference(k):
    # bf16 mixed precision: x and w rounded to bf16, the product accumulated (exactly here, in fp32 by the
    # BLAS) and rounded to bf16, the fp32 bias added in fp32; an odd input width is zero-padded to 8's multiple,
    # which must change nothing, values or gradients (those reach the unpadded fp32 parameters). Backward:
    # the bf16-rounded output gradient times bf16 operands, and its fp32 sum over the batch for the bias.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 9, k, generator=g).requires_grad_()
    w = torch.randn(3, k, 32, generator=g).requires_grad_()
    b = torch.randn(3, 1, 32, generator=g).requires_grad_()
    y = lowp_affine(x, w, b, torch.bfloat16)
    assert y.dtype == torch.float32
    xr, wr = x.detach().bfloat16().double(), w.detach().bfloat16().double()
    ref = torch.bmm(xr, wr).bfloat16().double() + b.detach().double()
    torch.testing.assert_close(y.double(), ref, rtol=2**-8, atol=1e-6)  # fp32 accumulation: within one bf16 step
    assert (y.double() - (x.double() @ w.double() + b.double())).abs().max() > 1e-4  # it is not fp32
    gy = torch.randn(3, 9, 32, generator=g)
    y.backward(gy)
    assert x.grad.shape == x.shape and w.grad.shape == w.shape and w.grad.dtype == torch.float32
    gr = gy.bfloat16().double()
    torch.testing.assert_close(w.grad.double(), xr.transpose(1, 2) @ gr, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(x.grad.double(), gr @ wr.transpose(1, 2), rtol=2e-2, atol=2e-2)
    assert b.grad.dtype == torch.float32
    torch.testing.assert_close(b.grad.double(), gr.sum(1, keepdim=True), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="bias must be"):
        lowp_affine(x, w, b[:, 0], torch.bfloat16)


def test_bf16_mlp_keeps_its_output_layer_in_fp32():
    fp32_net = StackedMLP(mlp_generators([0, 1], "x"), [5, 32, 32, 3])
    net = StackedMLP(mlp_generators([0, 1], "x"), [5, 32, 32, 3], arithmetic=BF16)  # the same weights
    x = torch.randn(2, 7, 5)
    fp32 = fp32_net(x)
    mixed = net(x)
    h = x
    for layer in net.layers[:-1]:
        h = torch.relu(lowp_affine(h, layer.weight, layer.bias, torch.bfloat16))
    expected = torch.bmm(h, net.layers[-1].weight) + net.layers[-1].bias  # fp32 output layer
    torch.testing.assert_close(mixed, expected, rtol=0, atol=0)
    torch.testing.assert_close(mixed, fp32, rtol=5e-2, atol=5e-2)
    assert net.matmul_dtype == torch.bfloat16 and fp32_net.matmul_dtype is None
    with pytest.raises(ValueError, match="bfloat16 or None"):
        Arithmetic(torch.float16)
    with pytest.raises(ValueError, match="bf16 arithmetic"):
        Arithmetic(None, fused=True)
    assert Arithmetic.of(bf16=True) == BF16 and Arithmetic.of(bf16=True, fused=True).fused


def test_adam_matches_torch_adam_float64():
    g = torch.Generator().manual_seed(0)
    p_ref = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    p = p_ref.detach().clone()
    ref = torch.optim.Adam([p_ref], lr=1e-2)
    ours = Adam([p], lr=1e-2)
    for _ in range(5):
        grad = torch.randn(3, 4, dtype=torch.float64, generator=g)
        p_ref.grad = grad.clone()
        ref.step()
        ours.step([grad])
    torch.testing.assert_close(p, p_ref.detach(), rtol=1e-12, atol=1e-12)


def test_adam_bias_correction_and_float32_steps_match_torch_adam():
    t = torch.arange(1, 5001, dtype=torch.float64)
    for beta in (0.0, 0.9, 0.999):
        torch.testing.assert_close(bias_correction(beta, t), 1 - beta**t, rtol=1e-13, atol=0)
    # float32 parameters: the corrections are computed in float32 (torch.optim.Adam: float64 on the host)
    g = torch.Generator().manual_seed(2)
    p_ref = torch.randn(64, generator=g, requires_grad=True)
    p = p_ref.detach().clone()
    ref, ours = torch.optim.Adam([p_ref], lr=1e-3), Adam([p], lr=1e-3)
    for _ in range(300):
        grad = torch.randn(64, generator=g)
        p_ref.grad = grad.clone()
        ref.step()
        ours.step([grad])
    torch.testing.assert_close(p, p_ref.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="betas"):
        Adam([p], lr=1e-3, betas=(0.9, 1.0))


def test_adam_cosine_schedule_matches_torch():
    g = torch.Generator().manual_seed(1)
    p_ref = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    p = p_ref.detach().clone()
    ref = torch.optim.Adam([p_ref], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref, T_max=6)
    ours = Adam([p], lr=0.1, schedule=cosine_schedule(6))
    for _ in range(8):
        grad = torch.randn(5, dtype=torch.float64, generator=g)
        p_ref.grad = grad.clone()
        ref.step()
        sched.step()
        ours.step([grad])
        torch.testing.assert_close(p, p_ref.detach(), rtol=1e-6, atol=1e-9)
        if ours.t.item() >= 6:
            break


@pytest.mark.parametrize(("spec", "expected"), [("0-3", [0, 1, 2, 3]), ("5", [5]), ("0,2, 7", [0, 2, 7]),
                                               ("0-1,4-5", [0, 1, 4, 5])])
def test_parse_seeds(spec, expected):
    assert parse_seeds(spec) == expected


@pytest.mark.parametrize("spec", ["", "a", "3-1", "0,0", "-2", "1-", "0-2,1"])
def test_bad_seed_specs(spec):
    with pytest.raises(SeedSpecError):
        parse_seeds(spec)


def _store(path, env_id="Toy-v0", obs=3, act=2, n=40, reward=1.0, episodes=2):
    rng = np.random.default_rng(0)
    tr = Transitions(rng.normal(size=(n, obs)), rng.uniform(-1, 1, (n, act)), np.full(n, reward),
                     rng.normal(size=(n, obs)), np.zeros(n, bool), np.zeros(n, bool))
    ends = np.linspace(0, n, episodes + 1).astype(int)[1:]
    write_store(path, tr, ends, env_id=env_id)
    return tr


def test_union_normalization_and_mix_ratio(tmp_path):
    a = _store(tmp_path / "a.zarr", reward=1.0)
    b = _store(tmp_path / "b.zarr", reward=-1.0, n=60)
    data, _ = load_training_data([tmp_path / "a.zarr", tmp_path / "b.zarr"])
    obs = np.concatenate([a.observations, b.observations]).astype(np.float64)
    np.testing.assert_allclose(data.obs_mean, obs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(data.obs_std, obs.std(0) + 1e-3, rtol=1e-5)
    assert data.num_transitions == 100
    mixed = OfflineData([a, b], mix_ratio=0.25)
    batch = mixed.sample(streams([0, 1]), 400)
    assert (batch.rewards == 1).float().mean().item() == 0.25  # exactly 100 of 400 from the first store
    uniform = data.sample(streams([0, 1]), 4000)
    assert abs((uniform.rewards == 1).float().mean().item() - 0.4) < 0.03


def test_reward_normalisation_by_return_range(tmp_path):
    _store(tmp_path / "a.zarr", reward=2.0, n=30, episodes=3)
    # every episode has the same return: normalisation must refuse rather than divide by zero
    with pytest.raises(StoreError, match="different returns"):
        load_training_data([tmp_path / "a.zarr"], reward_transform=RewardTransform(return_range_normalize=True))
    rng = np.random.default_rng(0)
    tr = Transitions(rng.normal(size=(30, 3)), rng.uniform(-1, 1, (30, 2)), np.arange(30.0),
                     rng.normal(size=(30, 3)), np.zeros(30, bool), np.zeros(30, bool))
    write_store(tmp_path / "r.zarr", tr, np.array([10, 30]), env_id="Toy-v0")
    data, _ = load_training_data([tmp_path / "r.zarr"], reward_transform=RewardTransform(1.0, -1.0, True))
    spread = sum(range(10, 30)) - sum(range(10))
    np.testing.assert_allclose(data.rewards.numpy(), np.arange(30.0) * 1000 / spread - 1, rtol=1e-5)


def test_stores_that_disagree(tmp_path):
    _store(tmp_path / "a.zarr")
    _store(tmp_path / "env.zarr", env_id="Other-v0")
    _store(tmp_path / "dim.zarr", obs=4)
    with pytest.raises(StoreError, match="disagree in env"):
        load_training_data([tmp_path / "a.zarr", tmp_path / "env.zarr"])
    with pytest.raises(StoreError, match="disagree in dims"):
        load_training_data([tmp_path / "a.zarr", tmp_path / "dim.zarr"])
    with pytest.raises(StoreError, match="mix ratio"):
        load_training_data([tmp_path / "a.zarr"], mix_ratio=0.5)


def test_summary_follows_appendix_f2(tmp_path):
    scores = {"x": {0: 10.0, 1: 20.0, 2: 60.0}, "y": {0: 30.0, 1: 40.0, 2: 0.0}}
    for name, per_seed in scores.items():
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"seeds": [0, 1, 2], "algorithm": "td3bc", "env_id": "E"}))
        for seed, score in per_seed.items():
            (run / f"seed_{seed}").mkdir()
            lines = [{"step": 1, "kind": "eval", "score_mean": score + 5}, {"step": 2, "kind": "train"},
                     {"step": 2, "kind": "eval", "score_mean": score}]
            (run / f"seed_{seed}" / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        (run / "results.json").write_text("{}")
    out = summarize([tmp_path / "x", tmp_path / "y"])
    assert out["rows"][0]["mean"] == pytest.approx(30.0)
    assert out["rows"][0]["std"] == pytest.approx(np.std([10, 20, 60], ddof=1))  # the sample std by default
    # F.2: per-seed means across tasks (20, 30, 30), then their mean and std.
    assert out["average"]["per_seed_mean"] == pytest.approx([20.0, 30.0, 30.0])
    assert out["average"]["mean"] == pytest.approx(80 / 3)
    assert out["average"]["std"] == pytest.approx(np.std([20, 30, 30], ddof=1))
    assert summarize([tmp_path / "x"], ddof=0)["rows"][0]["std"] == pytest.approx(np.std([10, 20, 60]))
    best = summarize([tmp_path / "x"], which="best")
    assert best["rows"][0]["mean"] == pytest.approx(35.0)
    assert math.isnan(summarize([tmp_path / "x"], ddof=3)["rows"][0]["std"])
    with pytest.raises(ValueError, match="ddof must be >= 0"):
        summarize([tmp_path / "x"], ddof=-1)
    # A run stopped early (no results.json) or missing a seed's log is not a final result unless asked for.
    (tmp_path / "y" / "results.json").unlink()
    with pytest.raises(ValueError, match="unfinished .*3 of 3 seeds evaluated, last at step 2"):
        summarize([tmp_path / "x", tmp_path / "y"])
    assert summarize([tmp_path / "y"], allow_unfinished=True)["rows"][0]["finished"] is False
    (tmp_path / "x" / "seed_2" / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match="2 of 3 seeds evaluated"):
        summarize([tmp_path / "x"])
