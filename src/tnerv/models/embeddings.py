"""Per-frame embeddings that an encoder computes from the frames and that are transmitted: the
EncodedEmbeddings mixin of HNeRV, DNeRV and T-NeRV."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from tnerv.errors import TnervError
from tnerv.models.base import ENCODER, INTERNAL_BATCH, FrameSource, PassProgress


class EncodedEmbeddings:
    """Per-frame embeddings that an encoder computes from the frames while fitting and that are
    transmitted (HNeRV, DNeRV, T-NeRV). Mixin: `class M(EncodedEmbeddings, VideoINR)`.

    The model calls `init_embeddings(shapes, with_encoder)` in `__init__` (names starting with
    "embeddings", each with its per-frame shape) and implements `compute_embeddings(frame_idx, frames,
    source) -> {name: (B, *shape)}` with gradients (`frames`: those of frame_idx, or None to read them
    from `source`, which reads any frame). Its `component_prefixes` list "embeddings_fresh" under the
    encoder, before "embeddings" under the embeddings.

    With the encoder, the embeddings are buffers recomputed where out of date (after every training
    step all are); without it (`from_transmitted`) they are parameters loaded from the state."""

    def init_embeddings(self, shapes: dict[str, tuple[int, ...]], with_encoder: bool) -> None:
        n = self.config.num_frames
        self.embedding_names = tuple(shapes)
        self.with_encoder = with_encoder and bool(shapes)
        for name, shape in shapes.items():
            if self.with_encoder:
                self.register_buffer(name, torch.zeros(n, *shape))
            else:
                self.register_parameter(name, nn.Parameter(torch.zeros(n, *shape)))
        if self.with_encoder:
            self.register_buffer("embeddings_fresh", torch.zeros(n, dtype=torch.bool))
        self._frames_ref: Callable[[], FrameSource | None] | None = None

    def remember_frames(self, frames: FrameSource) -> None:
        """Keeps a weak reference to the video so that stale embeddings can be recomputed later."""
        try:
            self._frames_ref = weakref.ref(frames)
        except TypeError:
            self._frames_ref = lambda: frames

    def attach_video(self, frames: FrameSource) -> None:
        self.remember_frames(frames)
        super().attach_video(frames)

    def prepare_export(self, frames: FrameSource) -> None:
        self.encode_frames(frames)
        super().prepare_export(frames)

    def frame_source(self) -> FrameSource | None:
        """The video this model last saw (fit, reconstruct or encode_frames), if it still exists."""
        return self._frames_ref() if self._frames_ref is not None else None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frames_ref"] = None  # weak references do not pickle
        return state

    @torch.no_grad()
    def encode_frames(self, frames: FrameSource, frame_idx: Tensor | None = None) -> None:
        """Computes and stores the embeddings of the given frames (default: all) that are not current."""
        if not self.with_encoder:
            return
        self.remember_frames(frames)
        if frame_idx is None:
            frame_idx = torch.arange(self.config.num_frames, device=self.embeddings_fresh.device)
        self._refresh(frame_idx, None, frames)

    def _refresh(self, frame_idx: Tensor, frames: Tensor | None, source: FrameSource | None) -> None:
        fresh = self.embeddings_fresh
        idx = frame_idx.to(fresh.device)
        stale = ~fresh[idx]
        if not stale.any():
            return
        source = source or self.frame_source()
        if frames is not None:  # the frames of frame_idx, in order
            todo: Any = [(idx[stale], frames[stale.to(frames.device)])]
        else:
            if source is None:
                raise TnervError(
                    f"the {self.name} frame embeddings are out of date and no frames are at hand: pass the "
                    "frames (model.encode_frames(frames) or reconstruct(idx, frames)) after training"
                )
            todo = ((chunk, source(chunk)) for chunk in torch.unique(idx[stale]).split(INTERNAL_BATCH))
        dtype = next(self.parameters()).dtype  # the encoder's: float32, or float64 in an fp64 fit
        with torch.no_grad():
            for chunk, chunk_frames in todo:
                values = self.compute_embeddings(chunk, chunk_frames.to(fresh.device, dtype), source)
                for name, value in values.items():
                    store = getattr(self, name)
                    store[chunk] = value.to(store.dtype)
                fresh[chunk] = True

    def embeddings_for(
        self, frame_idx: Tensor, frames: Tensor | None = None, source: FrameSource | None = None
    ) -> dict[str, Tensor]:
        """The embeddings of a batch: through the encoder with gradients while training, else the stored ones."""
        if self.with_encoder:
            if self.training and torch.is_grad_enabled():
                if frames is None:
                    raise TnervError(f"{self.name}'s training forward pass needs the frames (its encoder reads them)")
                self.embeddings_fresh.zero_()  # the weights are about to change
                return self.compute_embeddings(frame_idx, frames, source or self.frame_source())
            self._refresh(frame_idx, frames, source)
        return {name: getattr(self, name)[frame_idx.to(getattr(self, name).device)] for name in self.embedding_names}

    def parameter_counts(self) -> dict[str, int]:
        """As VideoINR's, with the stored embeddings counted although the fitted model computes them."""
        counts = super().parameter_counts()
        if self.with_encoder:
            extra = sum(getattr(self, name).numel() for name in self.embedding_names)
            for key in ("embeddings", "transmitted", "total"):
                counts[key] += extra
        return counts

    @torch.no_grad()
    def on_fit_start(self, frame_idx: Tensor, frames: FrameSource, progress: PassProgress | None = None) -> None:
        self.remember_frames(frames)
        super().on_fit_start(frame_idx, frames, progress)

    def after_step(self, frame_idx: Tensor, outputs: dict[str, Tensor]) -> None:
        if self.with_encoder:
            self.embeddings_fresh.zero_()  # the weights changed
        super().after_step(frame_idx, outputs)

    def reconstruct(
        self, frame_idx: Tensor, frames: FrameSource | None, batch_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        if frames is not None:
            self.remember_frames(frames)
        return super().reconstruct(frame_idx, frames, batch_size)

    def transmitted_state(self) -> dict[str, Tensor]:
        """Decoder, grids and the embeddings of every frame (computed here if out of date, from the
        frames this model last saw: call encode_frames(frames) first if it saw none)."""
        if self.with_encoder:
            self._refresh(torch.arange(self.config.num_frames, device=self.embeddings_fresh.device), None, None)
        return {k: v for k, v in self.state_dict().items() if self.component_of(k) != ENCODER}

    @classmethod
    def build_decoder(cls, config: Any) -> Any:
        """The decoder alone (no encoder): its embeddings are parameters that the state fills."""
        return cls(config, with_encoder=False)
