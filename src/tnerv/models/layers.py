"""Building blocks shared by the models: every model is assembled from these, none re-implements one."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


def make_activation(name: str) -> nn.Module:
    """An activation module by name ("gelu", "relu", "silu", "leaky_relu")."""
    return ACTIVATIONS[name]()


class PositionalEncoding(nn.Module):
    """PE(b, L) of a scalar t: sin(b^l * pi * t) and cos(b^l * pi * t) for l = 0..L-1 (2L features)."""

    def __init__(self, base: float = 1.25, levels: int = 80):
        super().__init__()
        freqs = base ** torch.arange(levels, dtype=torch.float64) * math.pi
        self.register_buffer("freqs", freqs.float(), persistent=False)
        self.dim = 2 * levels

    def forward(self, t: Tensor) -> Tensor:
        angles = t.float()[:, None] * self.freqs
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


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


def reduced_widths(first: int, strides: tuple[int, ...], reduction: float, lower_width: int) -> list[int]:
    """Output widths of successive upsampling blocks: each upsampling block divides the width by
    `reduction` (rounded), never going below `lower_width`; a stride-1 block keeps its width."""
    widths, width = [], first
    for i, stride in enumerate(strides):
        if i > 0 and stride > 1:
            width = max(round(width / reduction), lower_width)
        widths.append(width)
    return widths


def output_activation(x: Tensor, kind: str = "tanh") -> Tensor:
    """Maps head outputs to [0, 1]: (tanh(x) + 1) / 2 as NeRV/HNeRV, or sigmoid."""
    if kind == "tanh":
        return (torch.tanh(x) + 1) / 2
    if kind == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(f"unknown output activation {kind!r}")


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel dimension of (B, C, H, W) tensors (ConvNeXt's "channels_first")."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022): depthwise 7x7 -> LayerNorm -> Linear 4x -> GELU -> Linear
    -> layer scale -> residual. No stochastic depth (HNeRV's encoder uses none)."""

    def __init__(self, channels: int, layer_scale: float = 1e-6, kernel_size: int = 7):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
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

    HNeRV's tiny encoder: channels (64, 64, 64, 64, 16), one block per stage."""

    def __init__(
        self,
        strides: tuple[int, ...] | list[int],
        channels: tuple[int, ...] | list[int],
        blocks: tuple[int, ...] | list[int],
        in_channels: int = 3,
        layer_scale: float = 1e-6,
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
            self.downsample.append(
                nn.Sequential(conv, ChannelsFirstLayerNorm(c)) if i == 0 else nn.Sequential(ChannelsFirstLayerNorm(c_prev), conv)
            )
            self.stages.append(nn.Sequential(*(ConvNeXtBlock(c, layer_scale) for _ in range(n))))
            c_prev = c
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
        return x


class AdaIN(nn.Module):
    """Adaptive instance normalisation conditioned on a vector z (B, cond_dim):

        gamma, beta = Linear(cond_dim -> 2 * C)(z).chunk(2)
        AdaIN(x, z) = InstanceNorm(x) * (1 + gamma) + beta

    with InstanceNorm without affine parameters (per sample and channel over H, W, eps 1e-5).
    This is E-NeRV's and C-NeRV's `x_norm * gamma + beta` with gamma written as 1 + gamma: the same
    function family and parameter count, but the identity map (times the norm) at initialisation."""

    def __init__(self, channels: int, cond_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.affine = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.affine(cond)[:, :, None, None].chunk(2, dim=1)
        x = nn.functional.instance_norm(x, eps=self.eps)
        return x * (1 + gamma) + beta


class ModulatedUpsampleBlock(nn.Module):
    """AdaIN on the block input (when `cond_dim` is given), then an UpsampleBlock (conv, PixelShuffle,
    activation): the T-NeRV block, and E-NeRV's / C-NeRV's modulated upsampling stage."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, kernel_size: int = 3, cond_dim: int | None = None,
        activation: str = "gelu",
    ):
        super().__init__()
        self.adain = AdaIN(c_in, cond_dim) if cond_dim else None
        self.up = UpsampleBlock(c_in, c_out, stride, kernel_size, activation)

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
        if 0 in self.window or len(set(self.window)) != len(self.window):
            raise ValueError(f"the aggregation window holds distinct non-zero offsets, got {self.window}")
        self.head_channels = 3 * len(self.window)

    def aggregate(self, neighbours: Tensor, valid: Tensor, head: Tensor) -> Tensor:
        """neighbours (B, K, 3, H, W), valid (B, K) bool, head (B, 3K, h, w) -> A (B, 3, H, W)."""
        b, k, c, h, w = neighbours.shape
        flows = head[:, : 2 * k].float()
        scale = torch.tensor([w / flows.shape[-1], h / flows.shape[-2]], device=head.device).view(1, 1, 2, 1, 1)
        flows = nn.functional.interpolate(flows, size=(h, w), mode="bilinear", align_corners=False)
        flows = (flows.view(b, k, 2, h, w) * scale).reshape(b * k, 2, h, w)
        warped = backward_warp(neighbours.reshape(b * k, c, h, w).float(), flows).view(b, k, c, h, w)
        logits = nn.functional.interpolate(head[:, 2 * k :].float(), size=(h, w), mode="nearest")
        mask = valid.view(b, k, 1, 1)
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=1) * mask  # all-invalid: uniform * 0 = 0
        return (warped * weights.unsqueeze(2)).sum(dim=1)

    @staticmethod
    def blend(independent: Tensor, aggregated: Tensor, logits: Tensor) -> Tensor:
        p = torch.softmax(logits.float(), dim=1)
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
        return self.blend(independent.float(), aggregated, blend_logits), aggregated
