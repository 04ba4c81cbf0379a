"""FFNeRV's flow-guided output, which blends a frame with its warped neighbours: the FlowGuidedOutput
mixin of FFNeRV and T-NeRV."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from tnerv.errors import TnervError
from tnerv.models.base import INTERNAL_BATCH, FrameSource, PassProgress
from tnerv.parallel import gather_rows

BUFFER_DTYPES = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16
}


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class FlowGuidedOutput:
    """FFNeRV's flow-guided output (FFNeRV, T-NeRV). Mixin: `class M(FlowGuidedOutput, VideoINR)`.

    The model sets `self.aggregator` (a FlowAggregator, or None: the output is the independent frame),
    calls `init_frame_buffer(persistent)` and implements `decode_independent(frame_idx, frames=None,
    source=None)` -> (independent frame I (B, 3, H, W), flow head (B, 3K, h, w) or None, blend logits
    (B, 2, H, W) or None). Its config has `aux_loss_weight` and `buffer_dtype`; "frame_buffer" is
    listed under the encoder in its `component_prefixes` (a training-only buffer, not transmitted).

    While training, the neighbours' independent frames come from a buffer of detached outputs, filled
    before the first epoch; every training step writes its own independent frames into it before
    reading the neighbours (as FFNeRV's reference does: offset 0 reads the current frame, and frames
    of one batch see each other's current output). In eval mode the neighbours are decoded."""

    def init_frame_buffer(self, persistent: bool = True) -> None:
        dtype = self.config.buffer_dtype
        if dtype not in BUFFER_DTYPES:
            raise TnervError(f"unknown buffer_dtype {dtype!r}; available: {', '.join(BUFFER_DTYPES)}")
        # Allocated by on_fit_start; saved with checkpoints (persistent) so that a resumed fit has it.
        self.register_buffer("frame_buffer", torch.empty(0, dtype=BUFFER_DTYPES[dtype]), persistent=persistent)

    def aggregate_neighbours(
        self, frame_idx: Tensor, decoded: tuple, neighbour_frames: Callable[[Tensor], Tensor]
    ) -> dict[str, Tensor]:
        """{"output", "independent", "aggregated"} from decode_independent's result and a reader of
        the neighbours' independent frames."""
        independent, head, blend = decoded
        if self.aggregator is None:
            return {"output": independent, "independent": independent}
        idx, valid = self.aggregator.neighbour_indices(frame_idx, self.config.num_frames)
        b, k = idx.shape
        neighbours = neighbour_frames(idx.flatten()).view(b, k, *independent.shape[1:])
        neighbours = neighbours.to(independent.dtype) * valid.view(b, k, 1, 1, 1)
        output, aggregated = self.aggregator(independent, neighbours, valid, head, blend)
        return {"output": output, "independent": independent, "aggregated": aggregated}

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        """{"output", "independent" I(t), "aggregated" A(t)}; neighbours from the buffer while
        training, decoded in eval mode."""
        decoded = self.decode_independent(frame_idx, frames)
        if self.training:
            self._store(frame_idx, decoded[0])
            return self.aggregate_neighbours(frame_idx, decoded, self._buffered)
        return self.aggregate_neighbours(frame_idx, decoded, lambda idx: self.decode_independent(idx)[0])

    def _buffered(self, idx: Tensor) -> Tensor:
        if self.frame_buffer.numel() == 0:
            raise TnervError(
                f"{self.name}'s buffer of independent frames is empty: on_fit_start fills it (fit calls it)"
            )
        return self.frame_buffer[idx.to(self.frame_buffer.device)]

    def training_loss(
        self, outputs: dict[str, Tensor], target: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]
    ) -> Tensor:
        """l(output) + w * (l(A) + l(I)), w = aux_loss_weight (FFNeRV's 0.1); l(output) alone without aggregation."""
        loss = loss_fn(outputs["output"], target)
        if "aggregated" in outputs:
            w = self.config.aux_loss_weight
            loss = loss + w * loss_fn(outputs["aggregated"], target) + w * loss_fn(outputs["independent"], target)
        return loss

    @torch.no_grad()
    def on_fit_start(self, frame_idx: Tensor, frames: FrameSource, progress: PassProgress | None = None) -> None:
        """Fills the buffer of independent frames before the first epoch."""
        super().on_fit_start(frame_idx, frames, progress)
        if self.aggregator is None:
            return
        device, c = _device_of(self), self.config
        dtype = BUFFER_DTYPES[c.buffer_dtype]
        self.frame_buffer = torch.zeros(c.num_frames, 3, c.height, c.width, dtype=dtype, device=device)
        done = 0
        for chunk in frame_idx.to(device).split(INTERNAL_BATCH):
            self.frame_buffer[chunk] = self.decode_independent(chunk, None, frames)[0].to(dtype)
            done += len(chunk)
            if progress:
                progress(done, len(frame_idx))

    def _store(self, frame_idx: Tensor, independent: Tensor) -> None:
        """Writes a training step's independent frames (detached) into the buffer: those of every
        process's part of the step (torchrun), as one process fitting the whole batch would."""
        if self.aggregator is not None and self.frame_buffer.numel():
            buffer = self.frame_buffer
            frame_idx, independent = gather_rows(frame_idx.to(buffer.device), independent.detach())
            buffer[frame_idx] = independent.to(buffer.dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The buffer is allocated lazily: take the saved one's shape (in the configured dtype) before loading it.
        saved = state_dict.get(prefix + "frame_buffer")
        if saved is not None and saved.shape != self.frame_buffer.shape:
            dtype = BUFFER_DTYPES[self.config.buffer_dtype]
            self.frame_buffer = torch.empty(saved.shape, dtype=dtype, device=self.frame_buffer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def reconstruct(
        self, frame_idx: Tensor, frames: FrameSource | None, batch_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The evaluation forward pass, in batches: the independent frames of the batch and of its
        neighbours (those inside the video) are decoded once, kept while later batches need them, and
        aggregated. Independent frames are decoded in chunks aligned to multiples of `batch_size` in
        the video, so each frame's I(t) is the same computation whatever frames are asked for; with
        batches of `frame_idx` aligned the same way (as `tnerv.decode.decode_range` aligns them), any
        range decodes bit for bit as in a decode of the whole video."""
        n, device = self.config.num_frames, _device_of(self)
        order = [int(i) for i in frame_idx.tolist()]
        batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        window = self.aggregator.window if self.aggregator is not None else ()

        def needed(batch: list[int]) -> list[int]:
            return sorted({j + d for j in batch for d in (0, *window) if 0 <= j + d < n})

        cache: dict[int, tuple[Tensor | None, ...]] = {}
        for b, batch in enumerate(batches):
            missing = [j for j in needed(batch) if j not in cache]
            # Independent frames are decoded in blocks aligned to multiples of batch_size in the video, so
            # that a frame is always decoded in the same batch shape (kernels round differently per shape).
            for block in sorted({j // batch_size for j in missing}):
                chunk = list(range(block * batch_size, min((block + 1) * batch_size, n)))
                decoded = self.decode_independent(torch.tensor(chunk, device=device), None, frames)
                for pos, j in enumerate(chunk):
                    cache[j] = tuple(x[pos] if x is not None else None for x in decoded)
            idx = torch.tensor(batch, device=device)
            decoded = tuple(
                torch.stack([cache[j][i] for j in batch]) if cache[batch[0]][i] is not None else None for i in range(3)
            )
            zero = torch.zeros_like(cache[batch[0]][0])
            out = self.aggregate_neighbours(
                idx, decoded, lambda nb: torch.stack([cache[j][0] if j in cache else zero for j in nb.tolist()])
            )["output"]
            yield idx, out.clamp(0, 1)
            keep = set(needed(batches[b + 1])) if b + 1 < len(batches) else set()
            cache = {j: v for j, v in cache.items() if j in keep}
