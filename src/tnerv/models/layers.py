"""Building blocks shared by the models: every model is assembled from these, none re-implements one.
Behaviour of whole models (mixins that keep embeddings or a frame buffer): `tnerv.models.embeddings`,
`tnerv.models.flow_output`."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tnerv.errors import TnervError

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU, "none": nn.Identity}


def make_activation(name: str) -> nn.Module:
    """An activation module by name ("gelu", "relu", "silu", "leaky_relu", or "none")."""
    return ACTIVATIONS[name]()


class PositionalEncoding(nn.Module):
    """PE(b, L) of a scalar t: sin(b^l * pi * t) and cos(b^l * pi * t) for l = 0..L-1 (2L features)."""

    def __init__(self, base: float = 1.25, levels: int = 80):
        super().__init__()
        # Constants are computed on the CPU even while building on the meta device (for counting),
        # where arange would go through the decomposition machinery and import torch._dynamo.
        freqs = base ** torch.arange(levels, dtype=torch.float64, device="cpu") * math.pi
        self.register_buffer("freqs", freqs.float(), persistent=False)
        self.dim = 2 * levels

    def forward(self, t: Tensor) -> Tensor:
        angles = t.float()[:, None] * self.freqs
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def latent_coordinates(height: int, width: int) -> Tensor:
    """(2, height * width): the (y, x) position of each latent cell in [0, 1), row by row (on the CPU,
    as PositionalEncoding's constants)."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device="cpu") / height, torch.arange(width, device="cpu") / width, indexing="ij"
    )
    return torch.stack([ys.flatten(), xs.flatten()])


class MLP(nn.Sequential):
    """Linear layers of the given widths with an activation after each (and after the last if asked)."""

    def __init__(self, dims: list[int] | tuple[int, ...], activation: str = "gelu", act_last: bool = True):
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if act_last or i < len(dims) - 2:
                layers.append(make_activation(activation))
        super().__init__(*layers)


class UpsampleBlock(nn.Sequential):
    """The NeRV/HNeRV block: Conv2d(C_in -> C_out * s^2, k) -> PixelShuffle(s) -> activation."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel_size: int = 3, activation: str = "gelu"):
        super().__init__(
            nn.Conv2d(c_in, c_out * stride * stride, kernel_size, padding=kernel_size // 2),
            nn.PixelShuffle(stride),
            make_activation(activation),
        )


WIDTH_ROUNDINGS = ("round", "floor")


def reduced_widths(
    first: int, strides: tuple[int, ...], reduction: float, lower_width: int, rounding: str = "round"
) -> list[int]:
    """Output widths of successive upsampling blocks: each upsampling block divides the width by
    `reduction`, never going below `lower_width`; a stride-1 block keeps its width. `rounding` "round"
    rounds the quotient (NeRV, HNeRV); "floor" is Python's `width // reduction`, as E-NeRV's and DNeRV's
    references compute it."""
    if rounding not in WIDTH_ROUNDINGS:
        raise TnervError(f"unknown width rounding {rounding!r}; available: {', '.join(WIDTH_ROUNDINGS)}")
    widths, width = [], first
    for i, stride in enumerate(strides):
        if i > 0 and stride > 1:
            quotient = round(width / reduction) if rounding == "round" else int(width // reduction)
            width = max(quotient, lower_width)
        widths.append(width)
    return widths


def output_activation(x: Tensor, kind: str = "tanh") -> Tensor:
    """Maps head outputs to [0, 1]: (tanh(x) + 1) / 2, or sigmoid."""
    if kind == "tanh":
        # HNeRV writes tanh(x) * 0.5 + 0.5, NeRV and FFNeRV (tanh(x) + 1) * 0.5: in IEEE arithmetic the two
        # round identically (halving is exact), so either writing gives the same bits. sigmoid(2x), the same
        # function on paper, rounds differently (tests/test_layers.py).
        return torch.tanh(x) * 0.5 + 0.5
    if kind == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(f"unknown output activation {kind!r}")


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel dimension of (B, C, H, W) tensors (ConvNeXt's "channels_first")."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        # Mean and biased variance over C, as ConvNeXt's reference computes it; a permute to channels-last
        # and F.layer_norm would leave a channels-last tensor (other conv kernels, other rounding).
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022): depthwise 7x7 -> LayerNorm -> Linear 4x -> GELU -> Linear
    -> layer scale -> residual. No stochastic depth (HNeRV's encoder uses none). `norm=False` and
    `layer_scale=0` drop the LayerNorm and the layer scale (DNeRV's encoder blocks apply neither)."""

    def __init__(self, channels: int, layer_scale: float = 1e-6, kernel_size: int = 7, norm: bool = True):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6) if norm else nn.Identity()
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale)) if layer_scale > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C): the linears act on channels
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = y * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtEncoder(nn.Module):
    """A ConvNeXt frame encoder as HNeRV uses it: one stage per stride. Stage i first downsamples
    (stage 0: conv with kernel = stride, then LayerNorm; later stages: LayerNorm, then conv with
    kernel = stride), then applies `blocks[i]` ConvNeXt blocks of width `channels[i]`. The output is
    the last stage's (B, channels[-1], H / prod(strides), W / prod(strides)); no norm after it.

    HNeRV's tiny encoder: channels (64, 64, 64, 64, 16), one block per stage.

    DNeRV's variant: every stage downsamples with conv then LayerNorm (`norm_after_conv`), its blocks
    have neither LayerNorm nor layer scale (`block_norm=False`, `layer_scale=0`), a 1x1 convolution
    maps the last stage to `out_channels`, and the weights keep PyTorch's default initialisation
    (`convnext_init=False`)."""

    def __init__(
        self,
        strides: tuple[int, ...] | list[int],
        channels: tuple[int, ...] | list[int],
        blocks: tuple[int, ...] | list[int],
        in_channels: int = 3,
        layer_scale: float = 1e-6,
        block_norm: bool = True,
        norm_after_conv: bool = False,
        out_channels: int | None = None,
        convnext_init: bool = True,
    ):
        super().__init__()
        if not len(strides) == len(channels) == len(blocks):
            raise ValueError(
                f"one stride, width and block count per stage: got {len(strides)} strides, "
                f"{len(channels)} widths and {len(blocks)} block counts"
            )
        self.downsample = nn.ModuleList()
        self.stages = nn.ModuleList()
        c_prev = in_channels
        for i, (s, c, n) in enumerate(zip(strides, channels, blocks)):
            conv = nn.Conv2d(c_prev, c, s, stride=s)
            after = i == 0 or norm_after_conv
            norm = ChannelsFirstLayerNorm(c if after else c_prev)
            self.downsample.append(nn.Sequential(conv, norm) if after else nn.Sequential(norm, conv))
            self.stages.append(nn.Sequential(*(ConvNeXtBlock(c, layer_scale, norm=block_norm) for _ in range(n))))
            c_prev = c
        self.proj = nn.Conv2d(c_prev, out_channels, 1) if out_channels else None
        if convnext_init:
            self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # ConvNeXt's initialisation: truncated normal (std 0.02) weights, zero biases.
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        for down, stage in zip(self.downsample, self.stages):
            x = stage(down(x))
        return self.proj(x) if self.proj is not None else x


class AdaIN(nn.Module):
    """Adaptive instance normalisation conditioned on a vector z (B, cond_dim):

        gamma, beta = act(Linear(cond_dim -> 2 * C)(z)).chunk(2)
        AdaIN(x, z) = InstanceNorm(x) * (scale_offset + gamma) + beta

    with InstanceNorm without affine parameters (per sample and channel over H, W, eps 1e-5).
    The defaults (no activation, scale_offset 1) give the identity map (times the norm) at
    initialisation; E-NeRV's reference is `activation="gelu"`, `scale_offset=0`, i.e.
    `x_norm * gamma + beta` with a GELU after the linear map. Neither changes the parameter count."""

    def __init__(
        self, channels: int, cond_dim: int, eps: float = 1e-5, activation: str = "none", scale_offset: float = 1.0
    ):
        super().__init__()
        self.eps = eps
        self.scale_offset = scale_offset
        self.affine = nn.Linear(cond_dim, 2 * channels)
        self.act = make_activation(activation)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.act(self.affine(cond))[:, :, None, None].chunk(2, dim=1)
        x = nn.functional.instance_norm(x, eps=self.eps)
        if x.requires_grad:
            # torch 2.13 (CPU): instance_norm's backward returns a wrong input gradient when the gradient
            # reaching it is channels_last (a channels_last model): it gets that gradient in NCHW.
            x.register_hook(lambda grad: grad.contiguous())
        return x * (self.scale_offset + gamma) + beta


class ModulatedUpsampleBlock(nn.Module):
    """AdaIN on the block input (when `cond_dim` is given), then an UpsampleBlock (conv, PixelShuffle,
    activation): the T-NeRV block, and E-NeRV's / C-NeRV's modulated upsampling stage."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, kernel_size: int = 3, cond_dim: int | None = None,
        activation: str = "gelu", expanding: bool = False, adain_activation: str = "none",
        adain_scale_offset: float = 1.0,
    ):
        super().__init__()
        self.adain = None
        if cond_dim:
            self.adain = AdaIN(c_in, cond_dim, activation=adain_activation, scale_offset=adain_scale_offset)
        block = ExpandingUpsampleBlock if expanding else UpsampleBlock
        self.up = block(c_in, c_out, stride, kernel_size, activation)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.adain is not None:
            x = self.adain(x, cond)
        return self.up(x)


class TemporalGrid(nn.Module):
    """Multi-resolution temporal feature grids (FFNeRV): grid k holds `resolutions[k]` slices of
    (channels, height, width). For t in [0, 1) (t = i / N), grid k is read at position p = t * T_k
    by linear interpolation between slices floor(p) and floor(p) + 1 (clamped to the last slice),
    and the readings of all grids are concatenated: (B, channels * len(resolutions), height, width).
    Initialised as FFNeRV does (Xavier uniform over each grid)."""

    def __init__(self, resolutions: tuple[int, ...] | list[int], channels: int, height: int, width: int):
        super().__init__()
        self.resolutions = tuple(int(r) for r in resolutions)
        self.slices = nn.ParameterList(
            nn.Parameter(nn.init.xavier_uniform_(torch.empty(r, channels, height, width))) for r in self.resolutions
        )
        self.out_channels = channels * len(self.resolutions)

    def forward(self, t: Tensor) -> Tensor:
        out = []
        for grid in self.slices:
            last = grid.shape[0] - 1
            pos = t.float() * grid.shape[0]
            left = torch.floor(pos + 1e-6).long().clamp(0, last)  # 1e-6: i / N * N must land on slice i
            right = (left + 1).clamp(max=last)
            frac = (pos - left).clamp(0, 1).view(-1, 1, 1, 1).to(grid.dtype)
            out.append(grid[left] * (1 - frac) + grid[right] * frac)
        return torch.cat(out, dim=1)


def at_least_float32(x: Tensor) -> Tensor:
    """x in float32 if it is in a narrower type (bf16 autocast, a half-precision buffer); float64 stays."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def backward_warp(frames: Tensor, flow: Tensor, padding_mode: str = "border") -> Tensor:
    """Samples `frames` (B, C, H, W) at (x + flow_x, y + flow_y) for every pixel (x, y); `flow`
    (B, 2, H, W) is in pixels. Bilinear, pixel centres at integer coordinates (align_corners)."""
    _, _, h, w = frames.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    gx = (xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack([gx, gy], dim=-1)
    return nn.functional.grid_sample(frames, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


class FlowAggregator(nn.Module):
    """Flow-guided frame aggregation (FFNeRV), parameter-free.

    `head` (B, 3K, h, w) holds, for the K neighbours of the window in order, K flow maps (channels
    2k, 2k+1 = x, y displacement in pixels at h x w) and then K aggregation logits. The flows are
    upsampled bilinearly to the frame size and scaled by the upsampling factor, the logits are
    upsampled by nearest neighbour (as FFNeRV); each neighbour's independent frame is backward-warped
    with its flow, and the warped frames are averaged with per-pixel softmax weights over the
    neighbours. Neighbours outside the video (valid = False) are zero frames with zero weight; with no
    valid neighbour at all the aggregated frame is zero.

    `blend` mixes the independent frame I and the aggregated frame A with a per-pixel 2-way softmax of
    `logits` (B, 2, H, W): out = p0 * I + p1 * A."""

    def __init__(self, window: tuple[int, ...] | list[int] = (-2, -1, 1, 2)):
        super().__init__()
        self.window = tuple(int(d) for d in window)
        # Offset 0 is allowed (FFNeRV's default window is -2..2): the frame's own independent frame, warped.
        if len(set(self.window)) != len(self.window):
            raise ValueError(f"the aggregation window holds distinct offsets, got {self.window}")
        self.head_channels = 3 * len(self.window)

    def aggregate(self, neighbours: Tensor, valid: Tensor, head: Tensor) -> Tensor:
        """neighbours (B, K, 3, H, W), valid (B, K) bool, head (B, 3K, h, w) -> A (B, 3, H, W)."""
        b, k, c, h, w = neighbours.shape
        flows = at_least_float32(head[:, : 2 * k])
        scale = torch.tensor([w / flows.shape[-1], h / flows.shape[-2]], device=head.device).view(1, 1, 2, 1, 1)
        flows = nn.functional.interpolate(flows, size=(h, w), mode="bilinear", align_corners=False)
        flows = (flows.view(b, k, 2, h, w) * scale).reshape(b * k, 2, h, w)
        warped = backward_warp(at_least_float32(neighbours.reshape(b * k, c, h, w)), flows).view(b, k, c, h, w)
        logits = nn.functional.interpolate(at_least_float32(head[:, 2 * k :]), size=(h, w), mode="nearest")
        mask = valid.view(b, k, 1, 1)
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=1) * mask  # all-invalid: uniform * 0 = 0
        return (warped * weights.unsqueeze(2)).sum(dim=1)

    @staticmethod
    def blend(independent: Tensor, aggregated: Tensor, logits: Tensor) -> Tensor:
        p = torch.softmax(at_least_float32(logits), dim=1)
        return p[:, :1] * independent + p[:, 1:2] * aggregated

    def neighbour_indices(self, frame_idx: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
        """The window's frame indices (B, K), clamped into the video, and which are inside it."""
        idx = frame_idx.view(-1, 1) + torch.tensor(self.window, device=frame_idx.device)
        valid = (idx >= 0) & (idx < num_frames)
        return idx.clamp(0, num_frames - 1), valid

    def forward(
        self, independent: Tensor, neighbours: Tensor, valid: Tensor, head: Tensor, blend_logits: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Returns (output, aggregated)."""
        aggregated = self.aggregate(neighbours, valid, head)
        return self.blend(at_least_float32(independent), aggregated, blend_logits), aggregated


# --------------------------------------------------------------------------------------------------
# Blocks of the baselines (E-NeRV, C-NeRV, HNeRV, DNeRV).


def growing_kernel_sizes(num_blocks: int, first: int = 1, largest: int = 5) -> tuple[int, ...]:
    """HNeRV's kernel schedule: min(first + 2i, largest) for block i (1, 3, 5, 5, 5)."""
    return tuple(min(first + 2 * i, largest) for i in range(num_blocks))


class TransformerBlock(nn.Module):
    """E-NeRV's transformer block over tokens (B, N, dim): multi-head self-attention and a GELU
    feed-forward layer, each added to its input afterwards, no LayerNorm. Queries, keys and values
    come from one bias-free linear map to 3 * heads * head_dim; the attention output is projected back
    to `dim` unless a single head already has that width."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int):
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.proj = nn.Identity() if heads == 1 and head_dim == dim else nn.Linear(inner, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = nn.functional.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, -1))
        return x + self.ffn(x)


class CompactUpsampleBlock(nn.Sequential):
    """FFNeRV's compact block for its compression configs: a grouped 3x3 convolution (C_in -> C_out * s^2,
    `groups` groups) and a 1x1 convolution mixing the groups, then PixelShuffle(s) -> activation."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, kernel_size: int = 3, activation: str = "gelu", groups: int = 8
    ):
        wide = c_out * stride * stride
        if c_in % groups or wide % groups:
            raise TnervError(f"a compact block needs widths divisible by {groups} groups, got {c_in} -> {wide}")
        super().__init__(
            nn.Conv2d(c_in, wide, kernel_size, padding=kernel_size // 2, groups=groups),
            nn.Conv2d(wide, wide, 1),
            nn.PixelShuffle(stride),
            make_activation(activation),
        )


class ExpandingUpsampleBlock(nn.Sequential):
    """E-NeRV's first stage, which widens the channels cheaply: Conv2d(C_in -> C_in/4 * s^2, k) ->
    PixelShuffle(s) -> Conv2d(C_in/4 -> C_out, k) -> activation (C-NeRV's first stage too)."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, kernel_size: int = 3, activation: str = "gelu", squeeze: int = 4
    ):
        mid = max(1, c_in // squeeze)
        super().__init__(
            nn.Conv2d(c_in, mid * stride * stride, kernel_size, padding=kernel_size // 2),
            nn.PixelShuffle(stride),
            nn.Conv2d(mid, c_out, kernel_size, padding=kernel_size // 2),
            make_activation(activation),
        )


class ModulatedDecoder(nn.Module):
    """E-NeRV's decoder (C-NeRV's too): an MLP of the time features conditions AdaIN before every
    upsampling stage, the first stage widens cheaply (ExpandingUpsampleBlock), a 1x1 head gives RGB.
    `adain_activation` and `adain_scale_offset` are passed to every AdaIN (E-NeRV's reference: "gelu", 0)."""

    def __init__(
        self, c_latent: int, widths: list[int], strides: tuple[int, ...], kernel_size: int, time_dim: int,
        modulation_dims: tuple[int, ...], activation: str = "gelu", adain_activation: str = "none",
        adain_scale_offset: float = 1.0,
    ):
        super().__init__()
        self.modulation_mlp = MLP([time_dim, *modulation_dims], activation)
        c_in = [c_latent, *widths[:-1]]
        self.blocks = nn.ModuleList(
            ModulatedUpsampleBlock(
                ci, co, s, kernel_size, modulation_dims[-1], activation, expanding=i == 0,
                adain_activation=adain_activation, adain_scale_offset=adain_scale_offset,
            )
            for i, (ci, co, s) in enumerate(zip(c_in, widths, strides))
        )
        self.head = nn.Conv2d(widths[-1], 3, 1)

    def forward(self, x: Tensor, time_features: Tensor) -> Tensor:
        cond = self.modulation_mlp(time_features)
        for block in self.blocks:
            x = block(x, cond)
        return self.head(x)


class GatedFusion(nn.Module):
    """DNeRV's collaborative content unit (its eq. 5): merges a content feature c with a difference
    feature d of the same shape through 3x3 convolutions,

        p = tanh(W_pc c + W_pd d),  s = sigmoid(W_sc c + W_sd d),  c <- s * p + (1 - s) * c."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        conv = lambda: nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)  # noqa: E731
        self.p_content, self.p_diff, self.s_content, self.s_diff = conv(), conv(), conv(), conv()

    def forward(self, content: Tensor, diff: Tensor) -> Tensor:
        p = torch.tanh(self.p_content(content) + self.p_diff(diff))
        s = torch.sigmoid(self.s_content(content) + self.s_diff(diff))
        return s * p + (1 - s) * content



class SlicedTemporalGrid(nn.Module):
    """Learned grids over time (HiNeRV's base and local grids): level k holds `frames` slices of `cells`
    feature vectors of `channels` each, stored (frames, cells * channels), initialised uniform in
    (-init_scale, init_scale). Frame i of N reads each level by linear interpolation at slice position
    (i + 0.5) * frames / N - 0.5, clamped to the grid (align_corners=False, as F.interpolate and
    grid_sample read it there); the levels' readings are concatenated: (B, cells, sum of channels)."""

    def __init__(self, levels: list[tuple[int, int, int]], init_scale: float = 1e-3):
        super().__init__()
        self.levels = [(int(t), int(cells), int(ch)) for t, cells, ch in levels]
        if any(min(level) < 1 for level in self.levels):
            raise TnervError(f"a grid level without slices or channels: {self.levels} (too few frames for its levels)")
        self.slices = nn.ParameterList(
            nn.Parameter(nn.init.uniform_(torch.empty(t, cells * ch), -init_scale, init_scale))
            for t, cells, ch in self.levels
        )

    def forward(self, frame_idx: Tensor, num_frames: int) -> Tensor:
        out = []
        for (t, cells, ch), grid in zip(self.levels, self.slices):
            pos = ((frame_idx.float() + 0.5) * (t / num_frames) - 0.5).clamp(min=0)
            left = pos.floor().long().clamp(max=t - 1)
            right = (left + 1).clamp(max=t - 1)
            frac = (pos - left).view(-1, 1).to(grid.dtype)
            out.append((grid[left] * (1 - frac) + grid[right] * frac).view(-1, cells, ch))
        return torch.cat(out, dim=-1)


class ChannelsLastConvNeXtBlock(nn.Module):
    """HiNeRV's block on (B, H, W, C): depthwise k x k convolution -> LayerNorm without affine -> Linear
    (c_in -> hidden) -> GELU -> Linear (-> c_out), no biases; `mask` (B, H, W, 1) zeroes the branch
    outside the frame; the input is added back where the width is kept."""

    def __init__(self, c_in: int, c_out: int, hidden: int, kernel_size: int = 3):
        super().__init__()
        self.dwconv = nn.Conv2d(c_in, c_in, kernel_size, padding="same", groups=c_in, bias=False)
        self.fc1 = nn.Linear(c_in, hidden, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, c_out, bias=False)
        self.residual = c_in == c_out

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        y = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(torch.nn.functional.layer_norm(y, y.shape[-1:], eps=1e-6))))
        if mask is not None:
            y = y * mask
        return x + y if self.residual else y


def halved_widths(first: int, stages: int, minimum: int = 1) -> list[int]:
    """HiNeRV's stage widths: the first keeps `first`, each later one halves the previous (floor
    division), never below `minimum`."""
    widths = [max(first, minimum)]
    for _ in range(stages - 1):
        widths.append(max(widths[-1] // 2, minimum))
    return widths


def patch_paddings(
    strides: tuple[int, ...], kernel_sizes: tuple[int, ...], depths: tuple[int, ...], stem_kernel_size: int
) -> tuple[int, list[int]]:
    """HiNeRV's padding rule for patches (rows and columns alike): from the last stage back, each
    stage's output is padded by what its blocks' kernels reach plus what the later stages need; the
    input of an upsampling by s needs round(padding / s) + 1 (round half to even). Returns (the stem's
    padding, including its own kernel's reach, and each stage's output padding)."""
    pad, per_stage = 0, []
    for s, k, d in reversed(list(zip(strides, kernel_sizes, depths))):
        pad += d * ((k - 1) // 2)
        per_stage.append(pad)
        pad = round(pad / s) + (1 if s > 1 else 0)
    return pad + (stem_kernel_size - 1) // 2, list(reversed(per_stage))


def linear_upsample_weights(
    start_in: Tensor, n_in: int, start_out: Tensor, n_out: int, full_out: int, s: int
) -> Tensor:
    """(B, n_out, n_in): the weights of linear upsampling by s (align_corners=False, source positions
    clamped to the frame) from input pixels start_in + [0, n_in) to output pixels start_out + [0, n_out)
    of a frame `full_out` long; output pixels outside the frame get no weight."""
    out = start_out[:, None] + torch.arange(n_out, device=start_out.device)
    src = ((out.float() + 0.5) / s - 0.5).clamp(0, full_out // s - 1)
    inp = (start_in[:, None] + torch.arange(n_in, device=start_in.device)).float()
    dist = (src[:, :, None] - inp[:, None, :]).abs()
    inside = ((out >= 0) & (out < full_out)).float()[:, :, None]
    return (1 - dist).clamp(min=0) * inside
