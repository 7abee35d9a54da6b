"""``mixer-unet``: GTA's denoiser, the MLP-Mixer temporal U-Net of GTA App. A.2.

Written from the appendix and the facts of the authors' configuration (``configs/gta.yaml``: ``MixerUnet``,
``dim`` 16, random Fourier noise features of dimension 16, condition dropout 0.25). A window ``[B, T, D]`` is
an image ``[B, C, T, D]`` with one channel; the feature axis D stays a spatial axis all the way through:

* levels l = 0..L-1 (L = 4) have C_l = dim * (1, 2, 4, 8)[l] channels (16/32/64/128) at T / 2^l rows;
  each level of the down path holds two :class:`MixerBlock` and a linear attention (both residual), then a
  3x3 convolution with stride 2 over time halves the rows (not after the last level);
* two mixer blocks around a linear attention in the middle;
* the up path visits levels L-1..1: the skip of that level is concatenated on channels, two mixer blocks
  bring 2 C_l channels to C_{l-1}, a linear attention follows, and a transposed convolution doubles the rows.
  The output of level 0 is not a skip (the up path ends with the upsampling to full resolution);
* head: 3x3 Conv2d, GroupNorm(8), Mish, and a 1x1 Conv2d to one channel.

A :class:`MixerBlock` (c_in -> c_out channels) adds two feed-forwards of its input: one over the c_in * D
features of each time step and one over the T time steps of each (channel, feature); each has its own
LayerNorm, a 4x hidden layer and GELU. The sum goes through a 1x1 convolution to c_out channels, the
condition enters as an additive per-channel bias (Mish then Linear of the embedding), and a 1x1 convolution
of the input (identity where c_in = c_out) is the residual. Most parameters sit in the feature feed-forwards
(c_in * D x 4 c_in weights; for D = 24: up path 17.8M, down path 5.5M, middle 6.3M of 29,628,949).

Conditioning: the noise level c_noise goes through [c, sin(2 pi w c), cos(2 pi w c)] with 8 fixed random
frequencies w ~ N(0, 1) and an MLP to ``dim`` features; the return through an MLP to ``dim`` features, which
are zero where the condition is dropped (the null condition of classifier-free guidance, GTA Eq. 5); the two
are concatenated. The network itself is deterministic: the 0.25 dropout of training is drawn by the loss
(``TrainConfig.cond_drop_prob``), and sampling never drops a condition it was given.

Two forward passes compute the same function on the same parameters (float64 equality is a test):

* :meth:`MixerUnet.forward_reference` is the transcription on ``[B, C, T, D]`` with the Conv2d, LayerNorm,
  InstanceNorm and GroupNorm modules themselves;
* :meth:`MixerUnet.forward` keeps activations channels-last, ``[B, T, D, C]``: every 1x1 convolution is then
  one matrix product over the last axis, the 3x3 convolutions see channels-last views (no copies), the
  per-time-step feature axis ``(D, C)`` is contiguous (the feature feed-forward's weights are permuted to
  that order instead of the activations), the time feed-forward multiplies its weight from the left, and
  the normalisations reduce over the axes in place, in float32 under autocast. It has no data-dependent
  shapes and no host synchronisation, so it compiles and runs inside CUDA graphs.

Windows whose row count is not a multiple of 2^(L-1) are zero-padded at the end to the next multiple and
cropped on output (the authors' code drops the resampling instead); GTA's 32 rows (H = 31) need no padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gta_diffusion.networks.embeddings import RandomFourierEmbedding

__all__ = ["MixerBlock", "LinearAttention", "MixerUnet"]

_EPS = 1e-5  # LayerNorm, InstanceNorm2d and GroupNorm defaults


def _at_least_fp32(x: Tensor) -> Tensor:
    """bf16/fp16 -> float32 for reductions (as autocast runs its norms and softmax); float64 stays."""
    return x.float() if x.element_size() < 4 else x


def _normalize(x: Tensor, dims: tuple[int, ...], eps: float = _EPS) -> Tensor:
    """(x - mean) / sqrt(var + eps) over ``dims``, in at least float32."""
    xf = _at_least_fp32(x)
    var, mean = torch.var_mean(xf, dim=dims, keepdim=True, correction=0)
    return ((xf - mean) * torch.rsqrt(var + eps)).to(x.dtype)


def _conv1x1(x: Tensor, conv: nn.Module) -> Tensor:
    """A 1x1 Conv2d (or identity) applied to channels-last ``[..., C_in]``: a product over the last axis."""
    if isinstance(conv, nn.Identity):
        return x
    return F.linear(x, conv.weight[:, :, 0, 0], conv.bias)


def _nchw(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)  # [B, T, D, C] -> [B, C, T, D] view with channels-last strides


def _nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1).contiguous()  # [B, C, T, D] -> [B, T, D, C]; free for channels-last outputs


class FeedForward(nn.Module):
    """LayerNorm over the last axis, Linear to 4x, GELU, Linear back (one mixing MLP of a MixerBlock)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(features)
        self.fc1 = nn.Linear(features, 4 * features)
        self.fc2 = nn.Linear(4 * features, features)

    def forward(self, x: Tensor) -> Tensor:  # [..., F] -> [..., F]
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class FeatureFeedForward(nn.Module):
    """The feed-forward over the C * D features of a time step: hidden width 4 C (not 4 C D)."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.channels, self.width = channels, width
        self.norm = nn.LayerNorm(channels * width)
        self.fc1 = nn.Linear(channels * width, 4 * channels)
        self.fc2 = nn.Linear(4 * channels, channels * width)

    def forward(self, x: Tensor) -> Tensor:  # [..., (C D)] -> [..., (C D)]
        return self.fc2(F.gelu(self.fc1(self.norm(x))))

    def forward_channels_last(self, x: Tensor) -> Tensor:
        # x [B, T, D, C]. The parameters index features as (c d); permute the weights to (d c), not x.
        c, d = self.channels, self.width
        norm_w, norm_b, bias2 = (rearrange(v, "(c d) -> (d c)", c=c, d=d)
                                 for v in (self.norm.weight, self.norm.bias, self.fc2.bias))
        h = rearrange(x, "b t d c -> b t (d c)")  # a view
        h = F.layer_norm(h, (c * d,), norm_w, norm_b, self.norm.eps)
        h = F.gelu(F.linear(h, rearrange(self.fc1.weight, "o (c d) -> o (d c)", c=c, d=d), self.fc1.bias))
        h = F.linear(h, rearrange(self.fc2.weight, "(c d) i -> (d c) i", c=c, d=d), bias2)
        return rearrange(h, "b t (d c) -> b t d c", d=d, c=c)


class MixerBlock(nn.Module):
    """GTA's mixer block: out = conv1x1(FF_features(x) + FF_time(x)) + bias(emb) + conv1x1_res(x)."""

    def __init__(self, rows: int, width: int, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.features = FeatureFeedForward(c_in, width)
        self.time = FeedForward(rows)
        self.out_conv = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.res_conv = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.emb_proj = nn.Sequential(nn.Mish(), nn.Linear(emb_dim, c_out))

    def forward_reference(self, x: Tensor, emb: Tensor) -> Tensor:
        # x [B, C, T, D]; emb [B, E]
        c = x.shape[1]
        f = self.features(rearrange(x, "b c t d -> b t (c d)"))
        f = rearrange(f, "b t (c d) -> b c t d", c=c)
        s = rearrange(self.time(rearrange(x, "b c t d -> b c d t")), "b c d t -> b c t d")
        h = self.out_conv(f + s) + self.emb_proj(emb)[:, :, None, None]  # [B, C_out, T, D]
        return h + self.res_conv(x)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        # x [B, T, D, C] channels-last; emb [B, E]
        b, t, d, c = x.shape
        f = self.features.forward_channels_last(x)
        # Time feed-forward on [B, T, (D C)]: LayerNorm over T (axis 1), weights multiplied from the left.
        ff = self.time
        h = rearrange(x, "b t d c -> b t (d c)")
        h = _normalize(h, (1,), ff.norm.eps) * ff.norm.weight[:, None] + ff.norm.bias[:, None]
        h = F.gelu(torch.matmul(ff.fc1.weight.to(h.dtype), h) + ff.fc1.bias[:, None])  # [B, 4T, (D C)]
        h = torch.matmul(ff.fc2.weight.to(h.dtype), h) + ff.fc2.bias[:, None]  # [B, T, (D C)]
        s = rearrange(h, "b t (d c) -> b t d c", d=d, c=c)
        out = _conv1x1(f + s, self.out_conv) + self.emb_proj(emb)[:, None, None, :]  # [B, T, D, C_out]
        return out + _conv1x1(x, self.res_conv)


class LinearAttention(nn.Module):
    """Residual linear attention over all T * D positions, after an affine InstanceNorm (4 heads of 32).

    The keys are softmax-normalised over positions, context = sum_n k_n v_n^T per head, out_n = context^T q_n
    (no softmax of the queries, no scaling), then a 1x1 convolution back to C channels."""

    def __init__(self, channels: int, heads: int = 4, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.InstanceNorm2d(channels, affine=True)
        self.to_qkv = nn.Conv2d(channels, 3 * heads * head_dim, 1, bias=False)
        self.to_out = nn.Conv2d(heads * head_dim, channels, 1)

    def forward_reference(self, x: Tensor) -> Tensor:
        # x [B, C, T, D]
        t = x.shape[2]
        qkv = self.to_qkv(self.norm(x))
        q, k, v = rearrange(qkv, "b (three h e) t d -> three b h e (t d)", three=3, h=self.heads)
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return x + self.to_out(rearrange(out, "b h e (t d) -> b (h e) t d", t=t))

    def forward(self, x: Tensor) -> Tensor:
        # x [B, T, D, C] channels-last
        b, t, d, c = x.shape
        h = _normalize(x, (1, 2), self.norm.eps) * self.norm.weight + self.norm.bias
        qkv = _conv1x1(h, self.to_qkv)  # [B, T, D, 3 heads E]
        q, k, v = rearrange(qkv, "b t d (three h e) -> three b h (t d) e", three=3, h=self.heads)
        k = _at_least_fp32(k).softmax(dim=-2).to(v.dtype)  # over the positions n = (t d)
        context = torch.matmul(k.transpose(-1, -2), v)  # [B, h, E, E]
        out = torch.matmul(q, context)  # [B, h, (T D), E]
        return x + _conv1x1(rearrange(out, "b h (t d) e -> b t d (h e)", t=t, d=d), self.to_out)


class MixerUnetEmbedding(nn.Module):
    """[return embedding (zero where dropped), noise-level embedding], each ``dim`` features."""

    def __init__(self, dim: int, fourier_dim: int = 16) -> None:
        super().__init__()
        self.fourier = RandomFourierEmbedding(fourier_dim, scale=1.0, with_input=True)
        self.noise_mlp = nn.Sequential(nn.Linear(self.fourier.out_dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))
        self.cond_mlp = nn.Sequential(nn.Linear(1, 2 * dim), nn.Mish(), nn.Linear(2 * dim, dim))

    def forward(self, c_noise: Tensor, cond: Tensor | None, cond_dropped: Tensor | None) -> Tensor:
        t = self.noise_mlp(self.fourier(c_noise))  # [B, dim]
        if cond is None:
            y = torch.zeros_like(t)
        else:
            y = self.cond_mlp(cond.reshape(-1, 1).to(t.dtype))  # [B, dim]
            if cond_dropped is not None:  # torch.where: no data-dependent shapes, no host sync
                y = torch.where(cond_dropped.reshape(-1, 1), torch.zeros_like(y), y)
        return torch.cat([y, t], dim=-1)  # [B, 2 dim]


class MixerUnet(nn.Module):
    """GTA's MLP-Mixer temporal U-Net (App. A.2) on ``[B, T, D]`` windows; see the module docstring."""

    def __init__(
        self,
        transition_dim: int,
        horizon_rows: int,
        *,
        dim: int = 16,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        fourier_dim: int = 16,
        groups: int = 8,
        heads: int = 4,
        head_dim: int = 32,
    ) -> None:
        super().__init__()
        if transition_dim < 1 or horizon_rows < 1:
            raise ValueError(f"need transition_dim >= 1 and horizon_rows >= 1, got {transition_dim}, {horizon_rows}")
        if dim < 1 or dim % groups or not dim_mults or any(m < 1 for m in dim_mults):
            raise ValueError(f"invalid dim={dim} / dim_mults={dim_mults} (dim must be a multiple of {groups})")
        self.transition_dim, self.horizon_rows = transition_dim, horizon_rows
        levels = len(dim_mults)
        factor = 2 ** (levels - 1)
        self.padded_rows = math.ceil(horizon_rows / factor) * factor
        self.widths = [dim * m for m in dim_mults]
        self.rows = [self.padded_rows // 2**lvl for lvl in range(levels)]
        if self.rows[-1] * transition_dim < 2:
            raise ValueError("the coarsest level must hold more than one (row, feature) position for its "
                             f"InstanceNorm, got {self.rows[-1]} x {transition_dim}")
        w, rows, d, emb_dim = self.widths, self.rows, transition_dim, 2 * dim

        def attention(c: int) -> LinearAttention:
            return LinearAttention(c, heads, head_dim)

        self.embed = MixerUnetEmbedding(dim, fourier_dim)
        c_in = [1, *w[:-1]]
        self.down = nn.ModuleList(
            nn.ModuleList([MixerBlock(rows[lvl], d, c_in[lvl], w[lvl], emb_dim),
                           MixerBlock(rows[lvl], d, w[lvl], w[lvl], emb_dim), attention(w[lvl])])
            for lvl in range(levels)
        )
        # 3x3 convolution, stride 2 over time: T -> T/2 rows, D kept.
        self.downsample = nn.ModuleList(nn.Conv2d(w[lvl], w[lvl], 3, (2, 1), 1) for lvl in range(levels - 1))
        self.mid = nn.ModuleList([MixerBlock(rows[-1], d, w[-1], w[-1], emb_dim), attention(w[-1]),
                                  MixerBlock(rows[-1], d, w[-1], w[-1], emb_dim)])
        self.up = nn.ModuleList(  # up[lvl - 1] runs at level lvl and ends at C_{lvl-1} channels
            nn.ModuleList([MixerBlock(rows[lvl], d, 2 * w[lvl], w[lvl - 1], emb_dim),
                           MixerBlock(rows[lvl], d, w[lvl - 1], w[lvl - 1], emb_dim), attention(w[lvl - 1])])
            for lvl in range(1, levels)
        )
        # Transposed convolution, kernel (4, 3), stride (2, 1), padding 1: T -> 2T rows, D kept.
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(w[lvl - 1], w[lvl - 1], (4, 3), (2, 1), (1, 1)) for lvl in range(1, levels)
        )
        self.head_conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.head_norm = nn.GroupNorm(groups, dim)
        self.out_conv = nn.Conv2d(dim, 1, 1)

    def _check(self, x: Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.horizon_rows or x.shape[2] != self.transition_dim:
            raise ValueError(f"expected [B, {self.horizon_rows}, {self.transition_dim}] input, got {tuple(x.shape)}")

    def _pad(self, x: Tensor) -> Tensor:  # [B, T, D] -> [B, T_pad, D]
        return F.pad(x, (0, 0, 0, self.padded_rows - self.horizon_rows)) if self.padded_rows != self.horizon_rows else x

    def forward_reference(self, x: Tensor, c_noise: Tensor, cond: Tensor | None, cond_dropped: Tensor | None) -> Tensor:
        """The transcription of A.2 on ``[B, C, T, D]`` images (the definition :meth:`forward` is tested against)."""
        self._check(x)
        emb = self.embed(c_noise, cond, cond_dropped)  # [B, 2 dim]
        h = self._pad(x)[:, None]  # [B, 1, T, D]
        skips = []
        for lvl, (block1, block2, attn) in enumerate(self.down):
            h = attn.forward_reference(block2.forward_reference(block1.forward_reference(h, emb), emb))
            skips.append(h)
            if lvl < len(self.downsample):
                h = self.downsample[lvl](h)
        block1, attn, block2 = self.mid
        h = block2.forward_reference(attn.forward_reference(block1.forward_reference(h, emb)), emb)
        for lvl in reversed(range(1, len(self.down))):
            block1, block2, attn = self.up[lvl - 1]
            h = torch.cat([h, skips[lvl]], dim=1)  # [B, 2 C_l, T_l, D]
            h = attn.forward_reference(block2.forward_reference(block1.forward_reference(h, emb), emb))
            h = self.upsample[lvl - 1](h)  # [B, C_{l-1}, T_{l-1}, D]
        h = F.mish(self.head_norm(self.head_conv(h)))
        return self.out_conv(h)[:, 0, : self.horizon_rows]  # [B, T, D]

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None, cond_dropped: Tensor | None) -> Tensor:
        """The same function on channels-last activations ``[B, T, D, C]`` (the path used for training and
        sampling)."""
        self._check(x)
        emb = self.embed(c_noise, cond, cond_dropped)  # [B, 2 dim]
        h = self._pad(x)[..., None]  # [B, T, D, 1]
        skips = []
        for lvl, (block1, block2, attn) in enumerate(self.down):
            h = attn(block2(block1(h, emb), emb))
            skips.append(h)
            if lvl < len(self.downsample):
                conv = self.downsample[lvl]
                h = _nhwc(F.conv2d(_nchw(h), conv.weight, conv.bias, stride=(2, 1), padding=1))
        block1, attn, block2 = self.mid
        h = block2(attn(block1(h, emb)), emb)
        for lvl in reversed(range(1, len(self.down))):
            block1, block2, attn = self.up[lvl - 1]
            h = attn(block2(block1(torch.cat([h, skips[lvl]], dim=-1), emb), emb))
            conv = self.upsample[lvl - 1]
            h = _nhwc(F.conv_transpose2d(_nchw(h), conv.weight, conv.bias, stride=(2, 1), padding=(1, 1)))
        h = _nhwc(F.conv2d(_nchw(h), self.head_conv.weight, self.head_conv.bias, padding=1))  # [B, T, D, dim]
        norm = self.head_norm
        grouped = rearrange(h, "b t d (g c) -> b t d g c", g=norm.num_groups)
        h = rearrange(_normalize(grouped, (1, 2, 4), norm.eps), "b t d g c -> b t d (g c)")
        h = F.mish(h * norm.weight + norm.bias)
        return _conv1x1(h, self.out_conv)[:, : self.horizon_rows, :, 0]  # [B, T, D]
