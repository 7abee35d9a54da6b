"""The fused MLP kernels (gta_rl.kernels.fused_mlp, --fused-mlp: forward, and backward): routing on any machine, the Triton
kernel against a float64 reference and inside compiled, graph-captured training steps on CUDA."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from gta_rl.algorithms import build_config, get_spec
from gta_rl.fast import StepRunner
from gta_rl.kernels import fused_mlp
from gta_rl.nets import (
    BF16,
    FP32,
    FUSED,
    Arithmetic,
    StackedMLP,
    fused_mlp_networks,
    mlp_generators,
    twin_input,
)
from gta_rl.training import RunConfig, RunError, train

needs_triton = pytest.mark.skipif(not fused_mlp.available(), reason="needs CUDA and Triton")


def _net(members, sizes, device="cpu", seeds_of=1, arithmetic=FP32):
    """A stacked MLP of the given arithmetic; nets of the same shape have the same weights whatever their arithmetic."""
    net = StackedMLP(mlp_generators(list(range(members // seeds_of)), "fused-test", seeds_of), sizes,
                     arithmetic=arithmetic).to(device)
    with torch.no_grad():  # biases of both signs and sizes (nn.Linear's default init gives them already)
        for layer in net.layers:
            layer.bias.mul_(3.0)
    return net


def _float64(net, x, shared=1, first_of=1):
    """The network in float64 (x [M / shared, B, in])."""
    if shared != 1:
        x = twin_input(x, shared)
    h = x.double()
    for i, layer in enumerate(net.layers):
        w, b = layer.weight.double(), layer.bias.double()
        if first_of != 1:
            w, b = w[::first_of], b[::first_of]
        h = torch.bmm(h, w) + b
        if i < len(net.layers) - 1:
            h = torch.relu(h)
    return h


@pytest.mark.parametrize("bf16", [False, True])
def test_shared_input_equals_expanded_input(bf16):
    net = _net(6, [5, 16, 16, 3], seeds_of=2, arithmetic=BF16 if bf16 else FP32)
    x = torch.randn(3, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(net(x, shared=2), net(twin_input(x)), rtol=0, atol=0)
    # gradients reach the shared input from both members
    xg = x.clone().requires_grad_()
    net(xg, shared=2).sum().backward()
    xe = x.clone().requires_grad_()
    net(twin_input(xe)).sum().backward()
    torch.testing.assert_close(xg.grad, xe.grad)


def test_fused_flag_keeps_the_ordinary_path_where_the_kernel_does_not_apply():
    net = _net(4, [5, 16, 16, 3], seeds_of=2, arithmetic=BF16)
    x = torch.randn(2, 9, 5)
    with torch.no_grad():
        plain = net(x, shared=2)
        assert FUSED.fused and FUSED.fused_grad  # every pass, with gradients too
        forward_only = Arithmetic(torch.bfloat16, fused=True, fused_grad=False)  # bench_rl's "fusedfwd"
        for arithmetic in (FUSED, forward_only):
            fused = _net(4, [5, 16, 16, 3], seeds_of=2, arithmetic=arithmetic)
            torch.testing.assert_close(fused(x, shared=2), plain, rtol=0, atol=0)  # CPU tensors: not routed
    w = [layer.weight for layer in net.layers]
    with torch.no_grad():
        assert not fused_mlp.supports(x, w, None)  # CPU
    if fused_mlp.available():
        xc = x.cuda()
        wc = [torch.zeros(4, 5, 256, device="cuda"), torch.zeros(4, 256, 256, device="cuda"),
              torch.zeros(4, 256, 3, device="cuda")]
        with torch.no_grad():
            assert fused_mlp.supports(xc, wc, None)
            assert not fused_mlp.supports(xc, [t.cuda() for t in w], None)  # width 16
            assert not fused_mlp.supports(xc, wc, [torch.ones(1)])  # dropout masks
            assert not fused_mlp.supports(xc, wc[:2], None)  # one hidden layer
            assert not fused_mlp.supports(xc, [wc[0][:, :, :128], wc[1][:, :128, :128], wc[2][:, :128]], None)
            assert not fused_mlp.supports(xc, [wc[0], wc[1][:, :, :128], wc[2][:, :128]], None)  # 256 -> 128
            assert not fused_mlp.supports(xc, [w.double() for w in wc], None)  # fp64 parameters
            assert not fused_mlp.supports(xc, [torch.zeros(4, 65, 256, device="cuda"), *wc[1:]], None)  # in 65
            assert not fused_mlp.supports(xc, [*wc[:2], torch.zeros(4, 256, 33, device="cuda")], None)  # out 33
        assert not fused_mlp.supports(xc, wc, None)  # gradients on, not asked for
        assert fused_mlp.supports(xc, wc, None, grad=True)
        assert not fused_mlp.supports(xc, wc, [torch.ones(1)], grad=True)


def test_networks_the_kernel_covers():
    def agent(name, overrides=None):
        return get_spec(name).agent(build_config(name, None, overrides or {}), 17, 6, [0, 1])

    td3 = fused_mlp_networks(agent("td3bc"))
    assert sorted(td3) == ["actor", "actor_target", "critic", "critic_target"]
    assert fused_mlp_networks(agent("td3bc", {"hidden": [16, 16]})) == []
    assert fused_mlp_networks(agent("td3bc", {"hidden": [256, 256, 256]})) == []
    assert "qf_target" in fused_mlp_networks(agent("iql"))
    # CQL's networks have three hidden layers, MCQ's are 400 wide (--fused-mlp refuses them)
    assert fused_mlp_networks(agent("cql")) == fused_mlp_networks(agent("mcq")) == []


def _cuda_kernel_names(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.key for e in prof.key_averages() if e.device_type.name == "CUDA"}


@pytest.fixture
def kernel_calls(monkeypatch):
    """The calls that reach the fused forward op's entry point (compiled code too: dynamo replays the append with
    each call of the graph it traced): proof of routing."""
    calls = []
    original = fused_mlp.mlp2_forward

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(fused_mlp, "mlp2_forward", counted)
    return calls


def test_fused_mlp_run_needs_cuda_and_bf16(point_store, tmp_path):
    common = dict(steps=2, batch_size=8, eval_episodes=0, log_every=1, fused_mlp=True)
    if not fused_mlp.available():
        with pytest.raises(RunError, match="--fused-mlp needs a CUDA device and Triton"):
            train(RunConfig("td3bc", (str(point_store),), (0,), bf16=True, **common), tmp_path / "a")
        assert not (tmp_path / "a").exists()
    else:
        with pytest.raises(RunError, match="add --bf16"):
            train(RunConfig("td3bc", (str(point_store),), (0,), device="cuda", **common), tmp_path / "b")
        assert not (tmp_path / "b").exists()
        with pytest.raises(RunError, match="none of td3bc's networks has the kernel's shape"):
            train(RunConfig("td3bc", (str(point_store),), (0,), device="cuda", bf16=True,
                            overrides={"hidden": [16, 16]}, **common), tmp_path / "c")
        assert not (tmp_path / "c").exists()


SHAPES = [  # members, batch, sizes, shared, first_of
    (16, 1024, [23, 256, 256, 1], 2, 1),  # 8 seeds' twin critics at HalfCheetah's sizes
    (2, 100, [23, 256, 256, 1], 2, 1),  # one seed, a batch that is no multiple of the block
    (8, 1024, [17, 256, 256, 6], 1, 1),  # 8 actors
    (1, 37, [17, 256, 256, 6], 1, 1),
    (3, 300, [64, 256, 256, 32], 1, 1),  # the largest input and output widths routed here
    (8, 200, [23, 256, 256, 1], 1, 2),  # critic 1 of each twin pair: weights with a member stride of 2
    (8, 2048, [17, 256, 256, 6], 1, 1),  # a larger batch
]


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("members,batch,sizes,shared,first_of", SHAPES)
def test_fused_forward_matches_float64(members, batch, sizes, shared, first_of, tf32, kernel_calls):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        net = _net(members, sizes, "cuda", seeds_of=2 if first_of == 2 else 1, arithmetic=BF16)
        fused_net = _net(members, sizes, "cuda", seeds_of=2 if first_of == 2 else 1, arithmetic=FUSED)
        x = torch.randn(members // shared // first_of, batch, sizes[0], device="cuda")
        with torch.no_grad():
            exact = _float64(net, x, shared, first_of)
            plain = net(x, shared=shared, first_of=first_of)  # the bf16 path of the other kernels
            fused = fused_net(x, shared=shared, first_of=first_of)
            fused_bf16_input = fused_net(x.bfloat16(), shared=shared, first_of=first_of)
            strided = fused_net(torch.cat([x, x], -1)[..., :sizes[0]], shared=shared, first_of=first_of)  # x's stride
        assert len(kernel_calls) == 3
        assert fused.shape == plain.shape == exact.shape and fused.dtype == torch.float32
        scale = float(exact.abs().max())
        err_plain = float((plain.double() - exact).abs().max())
        err_fused = float((fused.double() - exact).abs().max())
        # Both round the bf16 operands the same way (the fused kernel rounds the hidden products once less and
        # multiplies the output layer in TF32): errors of the same bf16 size, where a wrong kernel is O(scale).
        assert err_fused <= 2 * err_plain, (err_fused, err_plain, scale)
        assert err_fused <= 1e-2 * scale
        torch.testing.assert_close(fused_bf16_input, fused, rtol=0, atol=0)  # the kernel rounds x to bf16 itself
        torch.testing.assert_close(strided, fused, rtol=0, atol=0)
        assert not torch.equal(fused, plain)  # other kernels, other roundings: the fused one did run
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


# Both kernels in Triton's CPU interpreter (TRITON_INTERPRET=1 makes gta_rl.kernels.fused_mlp give them fp32 operands:
# the interpreter's bf16 products are broken), through the registered ops and their autograd formula, against
# float64: the kernels' indexing, masks, strides and partial sums on any machine with Triton installed.
INTERPRETER_CHECK = r"""
import sys
import torch
from gta_rl.kernels import fused_mlp
from gta_rl.nets import StackedMLP, mlp_generators

assert fused_mlp._INTERPRET_F32
fused_mlp._define()
rows = int(sys.argv[1])
fused_mlp._launch_config = lambda *args: (rows, 4, 2)
for members, batch, k0, out, shared, first_of, input_grad, weight_grad in [
    (4, 100, 23, 1, 2, 1, True, True),  # twin critics, input shared by each pair
    (2, 70, 17, 6, 1, 1, True, True),  # actors
    (4, 65, 23, 1, 1, 2, True, True),  # critic 1 of each pair (a strided view of the parameters), trained
    (4, 33, 23, 1, 1, 2, True, False),  # ... frozen (the actor loss through the critic)
    (1, 45, 64, 32, 1, 1, True, True),  # the widest input and output
    (2, 64, 23, 1, 2, 1, False, True),  # weight gradients only
]:
    torch.manual_seed(0)
    net = StackedMLP(mlp_generators([0, 1], "interp", members // 2) if members > 1 else mlp_generators([0], "i"),
                     [k0, 256, 256, out])
    x = torch.randn(members // shared // first_of, batch, k0, requires_grad=input_grad)
    dy = torch.randn(members // first_of, batch, out)
    params = []
    for layer in net.layers:
        for t in (layer.weight, layer.bias):
            t = t if weight_grad else t.detach()
            params.append(t.view(-1, first_of, *t.shape[1:])[:, 0] if first_of != 1 else t)
    wanted = ([x] if input_grad else []) + (list(net.parameters()) if weight_grad else [])
    y = torch.ops.gta_rl.mlp2_forward(x, *params, shared)
    got = torch.autograd.grad((y * dy).sum(), wanted)
    h = x.double()
    if shared != 1:
        h = h.unsqueeze(1).expand(-1, shared, -1, -1).reshape(members // first_of, batch, k0)
    for i in range(3):
        h = torch.bmm(h, params[2 * i].double()) + params[2 * i + 1].double()
        h = torch.relu(h) if i < 2 else h
    exact = torch.autograd.grad((h * dy.double()).sum(), wanted)
    for name, a, e in zip(["y"] + [f"gradient {i}" for i in range(len(wanted))], [y, *got], [h, *exact]):
        assert a.shape == e.shape, (name, a.shape, e.shape)
        err = float((a.double() - e).abs().max())
        assert err <= 1e-4 * float(e.abs().max()) + 1e-7, (members, batch, k0, out, shared, first_of, err)
    print("ok", flush=True)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (gta-rl[fused])")
@pytest.mark.parametrize("rows", [64, 32])
def test_kernels_in_triton_interpreter(rows):
    env = os.environ | {"TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", INTERPRETER_CHECK, str(rows)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok"] * 6


GRAD_SHAPES = [  # members, batch, sizes, shared, first_of, input gradient, weight gradients
    (16, 1024, [23, 256, 256, 1], 2, 1, False, True),  # 8 seeds' twin critics, trained
    (2, 100, [23, 256, 256, 1], 2, 1, True, True),  # a batch that is no multiple of the block; both gradients
    (8, 1024, [17, 256, 256, 6], 1, 1, False, True),  # 8 actors, trained
    (3, 300, [64, 256, 256, 32], 1, 1, True, True),  # the largest widths routed here
    (8, 1000, [23, 256, 256, 1], 1, 2, True, False),  # critic 1 of each pair, frozen: the actor loss's gradient
]


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("members,batch,sizes,shared,first_of,input_grad,weight_grad", GRAD_SHAPES)
def test_fused_gradients_match_float64(members, batch, sizes, shared, first_of, input_grad, weight_grad,
                                       kernel_calls):
    torch.manual_seed(0)
    net = _net(members, sizes, "cuda", seeds_of=2 if first_of == 2 else 1, arithmetic=BF16)
    fused_net = _net(members, sizes, "cuda", seeds_of=2 if first_of == 2 else 1, arithmetic=FUSED)  # same weights
    x = torch.randn(members // shared // first_of, batch, sizes[0], device="cuda")
    weight = torch.randn(members // first_of, batch, sizes[-1], device="cuda")  # d loss / d output

    def gradients(module, run):
        xi = x.clone().requires_grad_(input_grad)
        wanted = ([xi] if input_grad else []) + (list(module.parameters()) if weight_grad else [])
        out = run(xi)
        return out, torch.autograd.grad((out * weight.to(out.dtype)).sum(), wanted)

    def net_pass(module):
        return lambda xi: module(xi, shared=shared, first_of=first_of, frozen=not weight_grad)

    exact_out, exact = gradients(net, lambda xi: _float64(net, xi, shared, first_of))  # float64 arithmetic
    plain_out, plain = gradients(net, net_pass(net))  # the --bf16 path of cuBLAS and autograd
    fused_out, fused = gradients(fused_net, net_pass(fused_net))
    assert len(kernel_calls) == 1
    assert torch.equal(fused_out, fused_net(x, shared=shared, first_of=first_of).detach())  # the forward kernel's
    names = (["x"] if input_grad else []) + ([n for n, _ in net.named_parameters()] if weight_grad else [])
    for name, e, p, f in zip(names, exact, plain, fused, strict=True):
        assert f.shape == e.shape and f.dtype == e.dtype, name
        scale = float(e.abs().max())
        err_plain, err_fused = float((p - e).abs().max()), float((f - e).abs().max())
        # the same bf16 roundings of operands (fewer of the products): errors of the plain path's size, where
        # a wrong gradient is O(scale)
        assert err_fused <= 2 * err_plain + 1e-4 * scale, (name, err_fused, err_plain, scale)
        # (bf16 activations alone put a gradient up to ~20% of its largest element off float64 where this
        # random output gradient's terms cancel (batch 100): the plain path's error, measured on the H100)
        assert err_fused <= 0.5 * scale, (name, err_fused, scale)
        if name != "layers.2.bias":  # the output gradient summed over the batch, the same sum in both
            assert not torch.equal(f, p), name  # other kernels, other roundings: the fused ones did run


def _agree_but_for_mask_flips(got: torch.Tensor, ref: torch.Tensor, name: str, atol: float = 1e-3) -> None:
    """bf16 results against the same bf16 arithmetic in torch: equal to a rounding (one bf16 ulp, or atol x the
    largest element where TF32 products feed it) except at most 0.1% of elements (a ReLU mask flipped by a
    pre-activation within an ulp of 0). A wrong index, mask or stale read moves whole blocks of rows."""
    got, ref = got.float(), ref.float()
    off = (got - ref).abs() > 2.0**-7 * ref.abs() + atol * float(ref.abs().max())
    assert float(off.float().mean()) <= 1e-3, (name, int(off.sum()), off.numel())


OP_SHAPES = [  # members, batch, input, output, shared, input gradient
    (16, 1024, 23, 1, 2, False),  # 8 seeds' twin critics (64-row blocks)
    (2, 100, 23, 1, 2, True),  # one seed's critics (32-row blocks), batch no multiple of the block
    (8, 1000, 17, 6, 1, True),
    (3, 300, 64, 32, 1, True),
]


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("members,batch,k0,out,shared,input_grad", OP_SHAPES)
def test_backward_kernel_outputs_agree_with_their_definitions(members, batch, k0, out, shared, input_grad):
    # Each tensor the backward kernel returns, recomputed in torch from its definition and the kernel's other
    # outputs (the same bf16 operands), for two calls with different inputs (the second may get the first's
    # buffers: a stale read of g2, written and read back within the kernel, would show).
    fused_mlp.register()
    gen = torch.Generator(device="cuda").manual_seed(0)
    sizes = [k0, 256, 256, out]
    w1, b1, w2, b2, w3, _ = (
        t for i in range(3) for t in (torch.randn(members, sizes[i], sizes[i + 1], device="cuda", generator=gen)
                                      / sizes[i] ** 0.5,
                                      0.3 * torch.randn(members, 1, sizes[i + 1], device="cuda", generator=gen)))
    low = fused_mlp._LOW
    w1l, w2l = w1.to(low).float(), w2.to(low).float()
    for _ in range(2):
        x = torch.randn(members // shared, batch, k0, device="cuda", generator=gen)
        dy = torch.randn(members, batch, out, device="cuda", generator=gen)
        dx, h1, g2, g1, pb1, pb2, pw3 = torch.ops.gta_rl.mlp2_backward(x, w1, b1, w2, b2, w3, dy, shared,
                                                                        input_grad, True)
        assert h1.dtype == g2.dtype == g1.dtype == low and h1.shape == g2.shape == g1.shape == (members, batch, 256)
        xe = twin_input(x, shared) if shared != 1 else x
        pre1 = torch.bmm(xe.to(low).float(), w1l) + b1
        _agree_but_for_mask_flips(h1, torch.relu(pre1).to(low), "h1")
        pre2 = torch.bmm(h1.float(), w2l) + b2
        _agree_but_for_mask_flips(g2, (torch.bmm(dy, w3.transpose(1, 2)) * (pre2 > 0)).to(low), "g2")
        _agree_but_for_mask_flips(g1, (torch.bmm(g2.float(), w2l.transpose(1, 2)) * (pre1 > 0)).to(low), "g1",
                                  atol=1e-5)
        # sums over the batch, as per-block partial sums: the same numbers summed in another order (fp32
        # rounding: a small multiple of 6e-8 x the sum of the terms' sizes)
        for partial, g in ((pb1, g1), (pb2, g2)):
            assert bool(((partial.sum(0) - g.float().sum(1)).abs() <= 1e-5 * g.float().abs().sum(1) + 1e-7).all())
        dw3 = torch.bmm(torch.relu(pre2).transpose(1, 2), dy)  # TF32 in the kernel
        torch.testing.assert_close(pw3.sum(0), dw3, rtol=1e-2, atol=5e-3 * float(dw3.abs().max()))
        if input_grad:
            dx_ref = torch.bmm(g1.float(), w1l.transpose(1, 2))
            if shared != 1:
                dx_ref = dx_ref.view(members // shared, shared, batch, k0).sum(1)
            torch.testing.assert_close(dx.view(members // shared, shared, batch, k0).sum(1), dx_ref,
                                       rtol=1e-4, atol=1e-4 * float(dx_ref.abs().max()))
        else:
            assert dx.numel() == 0


@pytest.mark.gpu
@needs_triton
def test_fused_forward_compiles_and_captures(kernel_calls):
    net = _net(4, [23, 256, 256, 1], "cuda", seeds_of=2, arithmetic=FUSED)
    x = torch.randn(2, 333, 23, device="cuda")

    def fn(x):
        with torch.no_grad():
            return net(x, shared=2).square() + 1.0

    eager = fn(x)
    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    assert len(kernel_calls) == 1
    torch.testing.assert_close(compiled(x), eager, rtol=1e-6, atol=1e-6)  # inductor's square + 1: an ulp
    assert len(kernel_calls) == 2  # traced into the compiled graph
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        compiled(x)
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        out = compiled(x)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(out, fn(x), rtol=1e-6, atol=1e-6)  # the replay read the new input


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("name", ["td3bc", "iql"])
def test_fused_training_step_matches_bf16_step(name, halfcheetah_sized_data):
    # --bf16 --fullgraph --cuda-graph with and without --fused-mlp at HalfCheetah's sizes: the same batches,
    # losses equal to bf16 precision, parameters that move alike.
    data = halfcheetah_sized_data

    def make(fused):
        return get_spec(name).agent(build_config(name, None, {}), 17, 6, [0, 1], device="cuda", total_steps=1000,
                                    arithmetic=FUSED if fused else BF16)

    plain, fused = make(False), make(True)
    start = [p.detach().clone() for p in plain.parameters()]
    torch._dynamo.reset()
    try:
        run_p = StepRunner(plain, data, 1024, cuda_graph=True, fullgraph=True)
        run_f = StepRunner(fused, data, 1024, cuda_graph=True, fullgraph=True)
        for step in range(8):
            mp = {k: v.clone() for k, v in run_p(step).items()}
            mf = run_f(step)
            for key in mp if step == 0 else [next(iter(mp))]:
                torch.testing.assert_close(mf[key], mp[key], rtol=2e-2, atol=1e-2)
        torch.cuda.synchronize()
        for p0, pp, pf in zip(start, plain.parameters(), fused.parameters(), strict=True):
            moved = (pp - p0).norm()
            assert (pf - pp).norm() <= 0.25 * moved or torch.equal(pf, p0) and torch.equal(pp, p0), (
                float(moved), float((pf - pp).norm()))
        # The replayed graphs of both kinds of step run both kernels. (Kernel names from the profiler: a
        # Python call counter inside the compiled step would be guarded on and recompile it at every call.)
        for step in range(8, 10):
            assert {"_mlp2_forward_kernel", "_mlp2_backward_kernel"} <= _cuda_kernel_names(lambda s=step: run_f(s))
    finally:
        torch._dynamo.reset()


@pytest.mark.gpu
@needs_triton
def test_fused_mlp_run_on_gpu(point_store, tmp_path, kernel_calls):
    # The evaluation's acting runs through the kernel too (the actor's gradient-free pass).
    out = train(RunConfig("td3bc", (str(point_store),), (0, 1), steps=40, batch_size=64, eval_every=20,
                          eval_episodes=2, log_every=10, device="cuda", bf16=True, fused_mlp=True, cuda_graph=True),
                tmp_path / "run")
    assert kernel_calls
    assert sorted(out["seeds"]) == ["0", "1"]
    assert all(np.isfinite(s["final_score"]) for s in out["seeds"].values())


@pytest.mark.skipif(fused_mlp.available(), reason="the error of a machine without CUDA")
def test_cli_fused_mlp_without_cuda_is_a_one_line_error(point_store, tmp_path):
    from typer.testing import CliRunner

    from gta_rl.cli import app

    res = CliRunner().invoke(app, ["train", "td3bc", "--data", str(point_store), "--seeds", "0", "--steps", "2",
                                   "--bf16", "--fused-mlp", "--out", str(tmp_path / "run")])
    assert res.exit_code != 0
    assert "--fused-mlp needs a CUDA device and Triton" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "run").exists()
