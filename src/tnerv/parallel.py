"""Data-parallel training with PyTorch's own engine: a process group set up from torchrun's
environment (NCCL on GPUs, gloo on CPUs), and the few collective steps a fit needs.

`torchrun --nproc-per-node N -m tnerv fit ...` starts N processes with RANK, LOCAL_RANK and WORLD_SIZE
set; `tnerv.train.fit` then splits every step's frames over them (DistributedDataParallel). Outside
torchrun nothing here does anything: one process is rank 0 of 1."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun started (WORLD_SIZE above 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device_type: str) -> bool:
    """Joins the process group torchrun describes (once); False when this is a single process."""
    if not launched_by_torchrun() or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return True


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_rank() -> int:
    """The index of this process on its machine (its GPU), from torchrun's LOCAL_RANK."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes files and shows progress (rank 0; torchrun's RANK before the
    process group is joined)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def broadcast_from_main(tensor: Tensor) -> Tensor:
    """Rank 0's value of a tensor on every rank (the tensor itself, unchanged, in a single process)."""
    if rank_and_size()[1] > 1:
        dist.broadcast(tensor, 0)
    return tensor


def sum_over_ranks(value: Tensor) -> Tensor:
    """The sum of a tensor over all ranks."""
    if rank_and_size()[1] > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value


def gather_rows(idx: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's (frame indices, rows) concatenated, in rank order; ranks may hold different counts."""
    _, size = rank_and_size()
    if size == 1:
        return idx, rows
    counts = [torch.zeros(1, dtype=torch.long, device=idx.device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([len(idx)], device=idx.device))
    most = int(max(c.item() for c in counts))
    # all_gather takes equal shapes: pad to the largest count, then drop the padding.
    padded_idx = torch.zeros(most, dtype=idx.dtype, device=idx.device)
    padded_rows = torch.zeros(most, *rows.shape[1:], dtype=rows.dtype, device=rows.device)
    padded_idx[: len(idx)], padded_rows[: len(rows)] = idx, rows
    all_idx = [torch.empty_like(padded_idx) for _ in range(size)]
    all_rows = [torch.empty_like(padded_rows) for _ in range(size)]
    dist.all_gather(all_idx, padded_idx)
    dist.all_gather(all_rows, padded_rows)
    n = [int(c.item()) for c in counts]
    return (
        torch.cat([i[:k] for i, k in zip(all_idx, n)]),
        torch.cat([r[:k] for r, k in zip(all_rows, n)]),
    )


def shard(idx: Tensor) -> tuple[Tensor, float]:
    """This rank's part of a global batch of frame indices, and the weight of its loss: DDP averages
    the ranks' gradients, so a rank with b of B frames weighs b * size / B to make that average the
    global batch's mean. A rank left without frames (a last batch smaller than the ranks) repeats the
    first frame at weight 0: every rank must run each step."""
    rank, size = rank_and_size()
    if size == 1:
        return idx, 1.0
    part = idx.tensor_split(size)[rank]
    if len(part) == 0:
        return idx[:1], 0.0
    return part, len(part) * size / len(idx)
