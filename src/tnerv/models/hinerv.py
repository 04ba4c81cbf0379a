"""HiNeRV (Kwan et al., NeurIPS 2023): a learned base grid over frames, read at t, gives a small latent;
each decoder stage upsamples it bilinearly, adds a local temporal grid (one feature vector per position
inside the upsampling cell, read at t) and applies ConvNeXt-style blocks; a linear head and a sigmoid
give the frame. Trained on patches: every stage runs on the patch's window, padded by as many pixels
as the later stages' kernels reach, with everything outside the frame held at zero.

Facts from the official code (hmkx/HiNeRV @ fdb92ec, read, not copied): the grids' sizes and level
scales, the temporal reading (linear, align_corners=False, clamped), the stage widths (halved with
floor division), the blocks (depthwise k x k without bias, LayerNorm without affine, two linears
without bias, GELU, residual where the width is kept), the upsampler (LayerNorm without affine, then
bilinear, align_corners=False), the padding rule, the zero biases and the grids' uniform(-1e-3, 1e-3)
initialisation. Only what every published config uses is built: no temporal upsampling, trilinear
upsampling, frames as the patches' temporal extent."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnerv.errors import TnervError
from tnerv.models.base import FrameSource, ModelConfig, VideoINR
from tnerv.models.card import ModelCard
from tnerv.models.layers import (
    ChannelsLastConvNeXtBlock,
    SlicedTemporalGrid,
    halved_widths,
    linear_upsample_weights,
    patch_paddings,
)
from tnerv.models.registry import register_model
from tnerv.models.scaling import scale_width
from tnerv.models.strides import resolve_strides, scale_grid_resolutions


@dataclass
class HiNeRVConfig(ModelConfig):
    """HiNeRV's architecture; the defaults are the official UVG-S config (600 frames of 1920x1080, 3,188,933)."""

    height: int = 1080
    width: int = 1920
    strides: tuple[int, ...] | str = (5, 3, 2, 2)  # spatial upsampling per stage (--scales-hw); or "auto"
    num_blocks: int = 4  # used when strides is "auto"
    target_latent_height: int = 18  # used when strides is "auto"
    channels: int = 280  # the stem's and first stage's width; each later stage halves it (floor division)
    channels_min: int = 1  # no stage narrower than this
    depths: tuple[int, ...] = (3, 3, 3, 1)  # blocks per stage
    expansions: tuple[float, ...] = (4.0, 4.0, 4.0, 1.0)  # hidden width of a block = int(its width * this)
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 3)  # of each stage's depthwise convolutions
    stem_kernel_size: int = 3
    grid_frames: int = 150  # temporal size of the base grid's first level (--base-grid-size T)
    grid_channels: int = 2  # channels of the base grid's first level (--base-grid-size C)
    grid_levels: int = 2
    grid_level_scale: tuple[float, float] = (2.0, 0.5)  # level l: frames / s_t^l, channels / s_c^l
    local_grid_channels: int = 4  # first stage's local temporal grid, first level (--enc-grid-size -1 C)
    local_grid_levels: int = 3
    local_grid_level_scale: tuple[float, float] = (2.0, 0.5)
    local_grid_depth_scale: tuple[float, float] = (1.0, 0.5)  # stage i: frames * s_t^i, channels * s_c^i
    grid_init_scale: float = 1e-3
    patch_size: tuple[int, int] = (120, 120)  # training patches (rows, columns); (0, 0): whole frames

    def follow_frames(self, reference: ModelConfig, given: Collection[str]) -> HiNeRVConfig:
        """The base grid's slices follow the frame count as temporal grids do; training patches are a
        setting's to give (its official geometries), else whole frames."""
        frames = scale_grid_resolutions((reference.grid_frames,), self.num_frames, reference.num_frames)[0]
        patches = self.patch_size if "patch_size" in given else (0, 0)
        return dataclasses.replace(self, grid_frames=frames, patch_size=patches)


def _level_size(base: int, scale: float, level: int) -> int:
    """A grid level's size as the official code computes it, int(base / scale^level), but at least 1:
    where the official code would build an empty grid (a clip of very few frames) and fail, one slice."""
    return max(1, int(base / scale**level))


_BUNNY_GEOMETRY = {"strides": (5, 2, 2, 2), "patch_size": (80, 80)}
_UVG_GEOMETRY = {"strides": (5, 3, 2, 2), "patch_size": (120, 120)}


@register_model
class HiNeRV(VideoINR):
    """Frame index in, frame out; trained on patches of the frame (`patch_size`)."""

    name = "hinerv"
    card = ModelCard(
        label="HiNeRV", colour="#bcbd22", marker="<", reference_preset="hinerv-3.2m-1080p",
        # Its official geometries: Bunny's at 720p (80x80 patches), UVG's at 1080p (120x120 patches); at
        # 1920x960 the same strides give a 16x32 base.
        settings={
            "setting1": _BUNNY_GEOMETRY, "mcl-jcv": _BUNNY_GEOMETRY,
            "setting2": _UVG_GEOMETRY, "davis": _UVG_GEOMETRY, "uvg-1080p": _UVG_GEOMETRY,
        },
    )
    config_class = HiNeRVConfig
    component_prefixes = {"grids": ("base_grid.", "local_grids.")}
    # Compressed in its own stages (`tnerv.codec.staged`); its positional encoders' linears are not pruned.
    compression = "staged"
    pruning_excludes = ("local_linears.",)
    # The official recipe (cfgs/train/hinerv_1920x1080.txt, main stage): 0.7 L1 + 0.3 (1 - MS-SSIM 5x5), Adam,
    # lr 2e-3 for a batch of one frame's area in patches (144 of 120x120 at 1080p), 10% warm-up from 2e-5 and a
    # cosine over all iterations to 2e-5 (timm's), gradients clipped at norm 1.
    train_defaults = {
        "lr": 2e-3, "betas": (0.9, 0.999), "warmup": 0.1, "warmup_start": 0.01, "schedule": "cosine-full",
        "final_lr": 0.01, "loss": "l1-ms-ssim5", "grad_clip": 1.0, "batch_size": 144,
    }

    def __init__(self, config: HiNeRVConfig):
        super().__init__(config)
        c = config
        stages = len(c.depths)
        if not len(c.expansions) == len(c.kernel_sizes) == stages:
            raise TnervError(f"one depth, expansion and kernel size per stage: got {c.depths}, {c.expansions}, "
                             f"{c.kernel_sizes}")
        if any(k % 2 == 0 for k in (*c.kernel_sizes, c.stem_kernel_size)):
            raise TnervError("HiNeRV's kernels are odd (its padding rule needs a centre)")
        self.strides, (self.latent_h, self.latent_w) = resolve_strides(
            c.height, c.width, c.strides, c.num_blocks, c.target_latent_height
        )
        if len(self.strides) != stages:
            raise TnervError(f"{len(self.strides)} strides for {stages} stages")
        self.patch = self._patch_shape()
        # Base grid: level l has int(T / s_t^l) slices of (latent_h, latent_w, int(C / s_c^l)).
        st, sc = c.grid_level_scale
        self.base_grid = SlicedTemporalGrid(
            [(_level_size(c.grid_frames, st, l), self.latent_h * self.latent_w, _level_size(c.grid_channels, sc, l))
             for l in range(c.grid_levels)], c.grid_init_scale,
        )
        base_channels = sum(_level_size(c.grid_channels, sc, l) for l in range(c.grid_levels))
        self.stem = nn.Conv2d(base_channels, c.channels, c.stem_kernel_size, padding="same")
        widths = halved_widths(c.channels, stages, c.channels_min)
        c_in = [c.channels, *widths[:-1]]
        self.local_grids = nn.ModuleList()
        self.local_linears = nn.ModuleList()
        self.stages = nn.ModuleList()
        dt, dc = c.local_grid_depth_scale
        lt, lc = c.local_grid_level_scale
        for i, (s, ci, co) in enumerate(zip(self.strides, c_in, widths)):
            frames_i = max(int(c.num_frames * dt**i), 1)
            channels_i = max(int(c.local_grid_channels * dc**i), 1)
            levels = [(_level_size(frames_i, lt, l), s * s, _level_size(channels_i, lc, l))
                      for l in range(c.local_grid_levels)]
            self.local_grids.append(SlicedTemporalGrid(levels, c.grid_init_scale))
            self.local_linears.append(nn.Linear(sum(ch for _, _, ch in levels), ci))
            self.stages.append(nn.ModuleList(
                ChannelsLastConvNeXtBlock(ci if j == 0 else co, co, int(co * c.expansions[i]), c.kernel_sizes[i])
                for j in range(c.depths[i])
            ))
        self.head = nn.Linear(widths[-1], 3)
        # The official code zeroes every bias of the stem, the stages (local linears included) and the head.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
                nn.init.zeros_(module.bias)
        # Paddings (rows and columns alike) of the stem's and each stage's output in patch mode.
        self.stem_padding, self.paddings = patch_paddings(
            self.strides, c.kernel_sizes, c.depths, c.stem_kernel_size
        )

    def channel_layout(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The official code stores a base-grid level as (slices * cells, channels); tnerv as (slices, cells
        * channels), the same values in the same order."""
        if name.startswith("base_grid.slices."):
            _, cells, channels = self.base_grid.levels[int(name.rsplit(".", 1)[1])]
            return (shape[0] * cells, channels)
        return shape

    def _patch_shape(self) -> tuple[int, int]:
        """The training patch (rows, columns): the config's, or the frame; it must tile the frame and be
        a multiple of the strides' product (whole latent cells)."""
        c = self.config
        ph, pw = c.patch_size if all(c.patch_size) else (c.height, c.width)
        cell = math.prod(self.strides)
        if c.height % ph or c.width % pw or ph % cell or pw % cell:
            raise TnervError(f"patch {ph}x{pw} must tile the {c.height}x{c.width} frame and be a multiple of "
                             f"{cell} (the strides' product)")
        return ph, pw

    def training_items(self) -> int:
        """Patches per frame: one epoch visits every patch of every frame once."""
        ph, pw = self.patch
        return (self.config.height // ph) * (self.config.width // pw)

    def training_target(self, items: Tensor, frames: FrameSource) -> Tensor:
        """The patches (B, 3, ph, pw) that training items (frame * patches + patch, row-major) stand for."""
        ph, pw = self.patch
        per_row = self.config.width // pw
        frame, patch = items // self.training_items(), items % self.training_items()
        video = frames(frame)
        rows = ((patch // per_row) * ph)[:, None] + torch.arange(ph, device=items.device)
        cols = ((patch % per_row) * pw)[:, None] + torch.arange(pw, device=items.device)
        batch = torch.arange(len(items), device=items.device)[:, None, None]
        return video.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    @classmethod
    def scale_widths(cls, config: HiNeRVConfig, factor: float) -> HiNeRVConfig:
        """The stem's width times `factor` (the later stages follow it), the grids' channels times factor^2
        (rounded, at least 1): both components grow with factor^2, keeping the split roughly."""
        return dataclasses.replace(
            config,
            channels=scale_width(config.channels, factor),
            grid_channels=scale_width(config.grid_channels, factor**2),
            local_grid_channels=scale_width(config.local_grid_channels, factor**2),
        )

    @classmethod
    def scale_decoder(cls, config: HiNeRVConfig, factor: float) -> HiNeRVConfig:
        """The stem's width times `factor`, the grids as they are (the settings size the grids themselves)."""
        return dataclasses.replace(config, channels=scale_width(config.channels, factor))

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        """Frames (B, 3, H, W) for frame indices; in training, patches (B, 3, ph, pw) for training items."""
        if self.training:
            per_frame = self.training_items()
            frame, patch = frame_idx // per_frame, frame_idx % per_frame
            per_row = self.config.width // self.patch[1]
            origin = torch.stack([(patch // per_row) * self.patch[0], (patch % per_row) * self.patch[1]], 1)
            return {"output": self._decode(frame, origin, self.patch, patch_mode=True)}
        origin = torch.zeros(len(frame_idx), 2, dtype=torch.long, device=frame_idx.device)
        return {"output": self._decode(frame_idx, origin, (self.config.height, self.config.width), patch_mode=False)}

    def _decode(self, frame: Tensor, origin: Tensor, size: tuple[int, int], patch_mode: bool) -> Tensor:
        """The output at `size` whose top-left pixel is `origin` (B, 2) in the frame. In patch mode every
        stage runs on a window padded as the official code pads it and zeroed outside the frame (so a
        patch equals that part of the whole frame); otherwise on the whole frame, unpadded."""
        n = self.config.num_frames
        cell = math.prod(self.strides)
        scale_in = cell  # frame pixels per pixel of the current resolution
        pad = self.stem_padding if patch_mode else 0
        full = (self.latent_h, self.latent_w)
        start = origin // scale_in - pad  # the window's first row/column at the latent's resolution
        win = (size[0] // scale_in + 2 * pad, size[1] // scale_in + 2 * pad)
        x = self.base_grid(frame, n).view(len(frame), *full, -1)
        if patch_mode:
            x = _window(x, start, win, full)
        mask = _inside(start, win, full) if patch_mode else None
        x = self.stem(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x if mask is None else x * mask
        for i, (s, blocks) in enumerate(zip(self.strides, self.stages)):
            scale_in //= s
            full = (full[0] * s, full[1] * s)
            pad_out = self.paddings[i] if patch_mode else 0
            start_out = origin // scale_in - pad_out
            win_out = (size[0] // scale_in + 2 * pad_out, size[1] // scale_in + 2 * pad_out)
            x = F.layer_norm(x, x.shape[-1:], eps=1e-6)
            if patch_mode:
                x = _upsample_window(x, start, start_out, win_out, full, s)
                mask = _inside(start_out, win_out, full)
            else:
                x = F.interpolate(x.permute(0, 3, 1, 2), scale_factor=s, mode="bilinear", align_corners=False)
                x = x.permute(0, 2, 3, 1)
            x = x + self._local_encoding(i, frame, s, start_out, win_out, mask)
            for block in blocks:
                x = block(x, mask)
            start = start_out
        x = torch.sigmoid(self.head(x))
        if patch_mode:  # the patch is the window's centre
            p = self.paddings[-1]
            x = x[:, p : p + size[0], p : p + size[1]]
        return x.permute(0, 3, 1, 2)

    def _local_encoding(
        self, stage: int, frame: Tensor, s: int, start: Tensor, win: tuple[int, int], mask: Tensor | None
    ) -> Tensor:
        """Stage `stage`'s local temporal grid read at each frame: the vector of position (row mod s,
        column mod s) of the upsampling cell, for every pixel of the window (zero outside the frame)."""
        cell = self.local_linears[stage](self.local_grids[stage](frame, self.config.num_frames))  # (B, s*s, C)
        cell = cell.view(len(frame), s, s, -1)
        rows = (start[:, 0:1] + torch.arange(win[0], device=frame.device)) % s
        cols = (start[:, 1:2] + torch.arange(win[1], device=frame.device)) % s
        batch = torch.arange(len(frame), device=frame.device)[:, None, None]
        enc = cell[batch, rows[:, :, None], cols[:, None, :]]
        return enc if mask is None else enc * mask


def _inside(start: Tensor, win: tuple[int, int], full: tuple[int, int]) -> Tensor:
    """(B, h, w, 1): 1 where a window's pixel lies in the frame (of size `full` at this resolution)."""
    rows = start[:, 0:1] + torch.arange(win[0], device=start.device)
    cols = start[:, 1:2] + torch.arange(win[1], device=start.device)
    r = (rows >= 0) & (rows < full[0])
    c = (cols >= 0) & (cols < full[1])
    return (r[:, :, None] & c[:, None, :]).unsqueeze(-1).float()


def _window(x: Tensor, start: Tensor, win: tuple[int, int], full: tuple[int, int]) -> Tensor:
    """The windows (B, h, w, C) of whole-frame features x (B, H, W, C), zero outside the frame."""
    rows = (start[:, 0:1] + torch.arange(win[0], device=x.device)).clamp(0, full[0] - 1)
    cols = (start[:, 1:2] + torch.arange(win[1], device=x.device)).clamp(0, full[1] - 1)
    batch = torch.arange(len(x), device=x.device)[:, None, None]
    return x[batch, rows[:, :, None], cols[:, None, :]] * _inside(start, win, full)


def _upsample_window(
    x: Tensor, start_in: Tensor, start_out: Tensor, win_out: tuple[int, int], full_out: tuple[int, int], s: int
) -> Tensor:
    """Bilinear upsampling by `s` (align_corners=False) from an input window to an output window, as one
    matrix per axis over the input window's pixels (pixels outside the output frame get zero)."""
    rows = linear_upsample_weights(start_in[:, 0], x.shape[1], start_out[:, 0], win_out[0], full_out[0], s)
    cols = linear_upsample_weights(start_in[:, 1], x.shape[2], start_out[:, 1], win_out[1], full_out[1], s)
    x = torch.einsum("boh,bhwc->bowc", rows.to(x.dtype), x)
    return torch.einsum("bpw,bowc->bopc", cols.to(x.dtype), x)
