"""GTA's own denoiser (``mixer-unet``, App. A.2): exact size, shapes, the channels-last forward against the
reference transcription, conditioning, determinism, and the EDM / Trainer / augmentation paths on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

from gta_diffusion.augmentation import AugmentConfig, augment
from gta_diffusion.data import WindowConfig
from gta_diffusion.edm import Denoiser, EDMConfig, edm_loss, edm_sampler
from gta_diffusion.networks import MixerUnet, build_network, count_parameters
from gta_diffusion.noise import SeededNoise
from gta_diffusion.training import TrainConfig, Trainer, load_model

TINY = {"dim": 8, "dim_mults": (1, 2)}


def _mixer_block(rows: int, d: int, c_in: int, c_out: int, emb: int) -> int:
    """Parameters of one mixer block, counted from A.2's description."""
    features = 2 * c_in * d + (c_in * d * 4 * c_in + 4 * c_in) + (4 * c_in * c_in * d + c_in * d)
    time = 2 * rows + (rows * 4 * rows + 4 * rows) + (4 * rows * rows + rows)
    convs = 2 * (c_in * c_out + c_out) if c_in != c_out else 0  # output and residual 1x1 convolutions
    return features + time + convs + emb * c_out + c_out


def _attention(c: int) -> int:
    return 2 * c + c * 384 + (128 * c + c)  # affine InstanceNorm, qkv (no bias), output 1x1 convolution


def test_parameter_count_is_gtas():
    """29,628,949 for halfcheetah (D = 24, H = 31 -> 32 rows, dim 16), and the split of the issue's audit."""
    net = build_network("mixer-unet", 24, 32)
    assert isinstance(net, MixerUnet) and net.widths == [16, 32, 64, 128] and net.rows == [32, 16, 8, 4]
    d, e = 24, 32
    down = (_mixer_block(32, d, 1, 16, e) + _mixer_block(32, d, 16, 16, e) + _attention(16)
            + _mixer_block(16, d, 16, 32, e) + _mixer_block(16, d, 32, 32, e) + _attention(32)
            + _mixer_block(8, d, 32, 64, e) + _mixer_block(8, d, 64, 64, e) + _attention(64)
            + _mixer_block(4, d, 64, 128, e) + _mixer_block(4, d, 128, 128, e) + _attention(128)
            + sum(9 * c * c + c for c in (16, 32, 64)))  # 3x3 stride-2 downsampling
    mid = 2 * _mixer_block(4, d, 128, 128, e) + _attention(128)
    up = (_mixer_block(4, d, 256, 64, e) + _mixer_block(4, d, 64, 64, e) + _attention(64)
          + _mixer_block(8, d, 128, 32, e) + _mixer_block(8, d, 32, 32, e) + _attention(32)
          + _mixer_block(16, d, 64, 16, e) + _mixer_block(16, d, 16, 16, e) + _attention(16)
          + sum(12 * c * c + c for c in (64, 32, 16)))  # (4, 3) transposed convolutions
    count = lambda *mods: sum(count_parameters(m) for m in mods)  # noqa: E731
    assert count(net.down, net.downsample) == down == 5_469_684
    assert count(net.mid) == mid == 6_385_592
    assert count(net.up, net.upsample) == up == 17_768_520
    # Noise MLP 17 -> 64 -> 16 and return MLP 1 -> 32 -> 16 (the 8 random frequencies are fixed); head.
    assert count(net.embed) == (17 * 64 + 64 + 64 * 16 + 16) + (32 + 32 + 32 * 16 + 16)
    assert count(net.head_conv, net.head_norm, net.out_conv) == (9 * 16 * 16 + 16) + 32 + 17
    assert count_parameters(net) == 29_628_949
    assert count_parameters(build_network("mixer-unet", 24, 32, dim=32)) == 117_750_549  # "117.8M at dim 32"


def _randomized(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():  # move affine norms off 1/0 so that a wrong permutation shows
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def _inputs(b: int, rows: int, d: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, rows, d, generator=g, dtype=dtype)
    return x, torch.randn(b, generator=g, dtype=dtype), torch.randn(b, generator=g, dtype=dtype), \
        torch.arange(b) % 3 == 0


@pytest.mark.parametrize(("rows", "d", "mults"), [(32, 24, (1, 2, 4, 8)), (13, 5, (1, 2, 4)), (1, 2, (1, 2)),
                                                  (8, 3, (1,)), (40, 11, (1, 2))])
def test_channels_last_forward_equals_reference_in_float64(rows, d, mults):
    net = _randomized(build_network("mixer-unet", d, rows, dim=8, dim_mults=mults)).double()
    x, c_noise, cond, dropped = _inputs(3, rows, d, torch.float64)
    for args in ((cond, dropped), (cond, None), (None, None)):
        fast = net(x, c_noise, *args)
        ref = net.forward_reference(x, c_noise, *args)
        assert fast.shape == (3, rows, d) and fast.dtype == torch.float64
        torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    # Gradients too: every parameter receives the same gradient through both passes.
    grads = []
    for fwd in (net.forward, net.forward_reference):
        net.zero_grad()
        fwd(x, c_noise, cond, dropped).square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for (name, _), a, b in zip(net.named_parameters(), *grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_every_input_row_and_feature_reaches_every_output():
    rows, d = 12, 4  # padded to 16 rows inside
    net = _randomized(build_network("mixer-unet", d, rows, **TINY)).double()
    x, c_noise, cond, _ = _inputs(1, rows, d, torch.float64)
    x.requires_grad_(True)
    net(x, c_noise, cond, None)[0, 0, 0].backward()
    assert (x.grad[0] != 0).all()
    with pytest.raises(ValueError, match="expected"):
        net(torch.zeros(2, rows + 1, d), torch.zeros(2), None, None)
    with pytest.raises(ValueError, match="multiple of 8"):
        build_network("mixer-unet", d, rows, dim=12)
    with pytest.raises(ValueError, match="more than one"):  # InstanceNorm over a single position
        build_network("mixer-unet", 1, 8, dim=8, dim_mults=(1, 2, 4, 8))


def test_condition_handling_and_null_condition():
    rows, d = 8, 3
    net = _randomized(build_network("mixer-unet", d, rows, **TINY)).eval()
    x, c_noise, cond, _ = _inputs(4, rows, d)
    every, none = torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)
    with torch.no_grad():
        uncond = net(x, c_noise, None, None)
        torch.testing.assert_close(net(x, c_noise, cond, every), uncond)
        torch.testing.assert_close(net(x, c_noise, 5 * cond + 1, every), uncond)  # dropped: value is ignored
        conditional = net(x, c_noise, cond, none)
        assert (conditional - uncond).abs().amax(dim=(1, 2)).min() > 1e-4  # the condition changes every window
        assert not torch.allclose(net(x, c_noise, cond + 1, none), conditional)
        torch.testing.assert_close(net(x, c_noise, cond, None), conditional)
        mixed = net(x, c_noise, cond, torch.tensor([True, False, True, False]))
        torch.testing.assert_close(mixed[[0, 2]], uncond[[0, 2]])
        torch.testing.assert_close(mixed[[1, 3]], conditional[[1, 3]])
        assert not torch.allclose(net(x, c_noise + 0.5, cond, None), conditional)  # and the noise level


def test_no_dropout_inside_the_network_training_drops_in_the_loss():
    """Sampling never drops a condition: the network is deterministic in train and eval mode, one window alone
    gives what it gives in a batch; the 0.25 dropout of training is the loss's (cond_drop_prob)."""
    rows, d = 8, 3
    net = _randomized(build_network("mixer-unet", d, rows, **TINY))
    x, c_noise, cond, dropped = _inputs(6, rows, d)
    with torch.no_grad():
        train_a, train_b = net.train()(x, c_noise, cond, dropped), net(x, c_noise, cond, dropped)
        evaluated = net.eval()(x, c_noise, cond, dropped)
        alone = net(x[2:3], c_noise[2:3], cond[2:3], dropped[2:3])
    assert torch.equal(train_a, train_b)
    torch.testing.assert_close(train_a, evaluated)
    torch.testing.assert_close(alone[0], evaluated[2], rtol=1e-4, atol=1e-5)  # float32: another batch size, other GEMM blocking
    den = Denoiser(net.train())
    cfg = EDMConfig()

    def loss(p: float) -> torch.Tensor:
        return edm_loss(den, x, cond, cfg=cfg, cond_drop_prob=p, generator=torch.Generator().manual_seed(3))

    with torch.no_grad():
        kept, all_dropped, some = loss(0.0), loss(1.0), loss(0.25)
        unconditional = edm_loss(den, x, None, cfg=cfg, cond_drop_prob=0.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(all_dropped, unconditional)
    per_window = lambda t: t.sum(dim=(1, 2))  # noqa: E731
    assert not torch.allclose(per_window(kept), per_window(all_dropped))
    # With p = 0.25 each window's loss is either its conditional or its unconditional one.
    same = torch.isclose(per_window(some), per_window(kept)) | torch.isclose(per_window(some), per_window(all_dropped))
    assert same.all()


def test_edm_denoiser_sampler_and_bf16():
    rows, d = 8, 3
    den = Denoiser(_randomized(build_network("mixer-unet", d, rows, **TINY)).eval())
    x, _, cond, _ = _inputs(5, rows, d)
    seeds = torch.arange(5) + 11
    with torch.no_grad():
        full = edm_sampler(den, x, cond, cfg=EDMConfig(num_steps=6), start_index=2, noise=SeededNoise(seeds),
                           guidance_scale=3.0)
        again = edm_sampler(den, x, cond, cfg=EDMConfig(num_steps=6), start_index=2, noise=SeededNoise(seeds),
                            guidance_scale=3.0)
        part = edm_sampler(den, x[[3, 1]], cond[[3, 1]], cfg=EDMConfig(num_steps=6), start_index=2,
                           noise=SeededNoise(seeds[[3, 1]]), guidance_scale=3.0)
        other = edm_sampler(den, x, cond + 2, cfg=EDMConfig(num_steps=6), start_index=2, noise=SeededNoise(seeds),
                            guidance_scale=3.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = den(x, torch.ones(5), cond, None)
        ref = den(x, torch.ones(5), cond, None)
    assert torch.isfinite(full).all() and torch.equal(full, again)
    torch.testing.assert_close(part, full[[3, 1]], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(other, full)  # sampling follows the condition
    assert low.dtype == torch.float32 and torch.allclose(low, ref, atol=0.1)


def test_trains_resumes_and_augments_through_the_trainer(tmp_path, toy_store):
    cfg = TrainConfig(preset="mixer-unet", network_overrides=TINY, steps=6, batch_size=8, warmup_steps=1,
                      log_every=2, checkpoint_every=3)
    wcfg = WindowConfig(horizon=7)
    full = Trainer.create(tmp_path / "full", toy_store.path, cfg, wcfg)
    full.train()
    killed = Trainer.create(tmp_path / "killed", toy_store.path, cfg, wcfg)
    killed.train(until=4)
    resumed = Trainer.create(tmp_path / "killed", None)
    assert resumed.step_count == 3 and isinstance(resumed.denoiser.net, MixerUnet)
    resumed.train()
    for a, b in zip(full.ema, resumed.ema, strict=True):
        assert torch.equal(a, b)
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["network"]["preset"] == "mixer-unet"
    assert config["network"]["parameters"] == count_parameters(full.denoiser)
    denoiser, *_ = load_model(tmp_path / "full")
    assert isinstance(denoiser.net, MixerUnet)
    out = augment(tmp_path / "full", toy_store.path, tmp_path / "aug.zarr",
                  AugmentConfig(num_transitions=40, batch_size=4, num_steps=4))
    assert out.num_transitions == 40
    assert torch.isfinite(torch.as_tensor(out.load().observations)).all()
