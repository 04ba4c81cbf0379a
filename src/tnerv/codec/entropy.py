"""Entropy models and entropy coding.

`FactorizedDensity` is the univariate non-parametric density of Balle et al. (2018), "Variational
image compression with a scale hyperprior", Sec. 6.1: a monotone cumulative c(x) made of a few
small layers whose matrices are kept positive by softplus. The likelihood of an integer q is
c(q + 1/2) - c(q - 1/2). For coding, the density is discretised into an integer frequency table
over the symbols' range, which the bitstream stores, and the symbols are range-coded with
constriction from that table alone.
"""

from __future__ import annotations

import math

import constriction
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Frequency tables sum to 2^PRECISION; probabilities below 2^-PRECISION are rounded up to one count.
PRECISION = 16
LIKELIHOOD_FLOOR = 1e-9


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient also passes below the bound when it would raise x (CompressAI's LowerBound)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        # A descent step moves x by -grad: a negative gradient below the bound pushes x up, towards
        # the bound, so it passes; a plain clamp would leave such a symbol with no gradient at all.
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


def lower_bound(x: Tensor, bound: float) -> Tensor:
    """max(x, bound) in the forward pass, with the gradient of _LowerBound."""
    return _LowerBound.apply(x, bound)


class FactorizedDensity(nn.Module):
    """A learned density over the integers of one tensor (all elements i.i.d.)."""

    def __init__(self, init_scale: float = 10.0, filters: tuple[int, ...] = (3, 3, 3)):
        super().__init__()
        dims = (1, *filters, 1)
        # Initialised so that c is roughly a logistic CDF of width init_scale, as in Balle et al.
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            init = math.log(math.expm1(1 / scale / d_out))
            self.matrices.append(nn.Parameter(torch.full((d_out, d_in), init)))
            self.biases.append(nn.Parameter(torch.empty(d_out, 1).uniform_(-0.5, 0.5)))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(d_out, 1)))

    def logits_cdf(self, x: Tensor) -> Tensor:
        """The cumulative's logit at every value of x (any shape)."""
        h = x.reshape(1, -1)
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            h = F.softplus(matrix) @ h + bias
            if i < len(self.factors):
                h = h + torch.tanh(self.factors[i]) * torch.tanh(h)
        return h.reshape(x.shape)

    def likelihood(self, q: Tensor) -> Tensor:
        """P(q) = c(q + 1/2) - c(q - 1/2), computed on the side of the median where it is stable."""
        lower, upper = self.logits_cdf(q - 0.5), self.logits_cdf(q + 0.5)
        sign = -torch.sign(lower + upper).detach()
        return (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()

    def bits(self, q: Tensor) -> Tensor:
        """Total information content of the values in q, in bits."""
        return -torch.log2(lower_bound(self.likelihood(q), LIKELIHOOD_FLOOR)).sum()

    @torch.no_grad()
    def frequency_table(self, qmin: int, qmax: int) -> np.ndarray:
        """Integer frequencies of the symbols qmin..qmax, each at least 1, summing to 2^PRECISION."""
        q = torch.arange(qmin, qmax + 1, dtype=torch.float32, device=self.matrices[0].device)
        return probabilities_to_counts(self.likelihood(q).double().cpu().numpy())


def probabilities_to_counts(probabilities: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Quantises probabilities to positive integer counts summing to 2^precision."""
    total = 1 << precision
    if len(probabilities) > total:
        raise ValueError(f"{len(probabilities)} symbols do not fit a {precision}-bit frequency table")
    p = np.maximum(probabilities, 0) / max(probabilities.sum(), 1e-300)
    counts = np.maximum(1, np.floor(p * total)).astype(np.int64)
    # Put the rounding error on the most probable symbols so every count stays >= 1.
    excess = int(counts.sum() - total)
    if excess < 0:
        counts[np.argmax(counts)] -= excess
    for j in np.argsort(-counts, kind="stable"):
        if excess <= 0:
            break
        take = min(excess, int(counts[j]) - 1)
        counts[j] -= take
        excess -= take
    return counts.astype(np.uint32)


def counts_from_symbols(symbols: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """A frequency table from the symbols' own histogram (for post-training quantisation)."""
    histogram = np.bincount(symbols - qmin, minlength=qmax - qmin + 1).astype(np.float64)
    return probabilities_to_counts(histogram)


def _categorical(counts: np.ndarray) -> constriction.stream.model.Categorical:
    probabilities = counts.astype(np.float64) / counts.sum()
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def encode_symbols(symbols: np.ndarray, qmin: int, counts: np.ndarray) -> bytes:
    """Range-codes integer symbols (all within qmin .. qmin + len(counts) - 1) with a frequency table."""
    if symbols.size == 0 or len(counts) == 1:
        return b""  # nothing to say: a single possible symbol costs no bits
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode((symbols.ravel() - qmin).astype(np.int32), _categorical(counts))
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_symbols(payload: bytes, qmin: int, counts: np.ndarray, size: int) -> np.ndarray:
    """Inverse of encode_symbols: `size` integer symbols."""
    if size == 0 or len(counts) == 1:
        if payload:
            raise ValueError("a payload for a table of one symbol")
        return np.full(size, qmin, dtype=np.int64)
    if len(payload) % 4:
        raise ValueError("a range-coded payload is a whole number of 32-bit words")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    symbols = decoder.decode(_categorical(counts), size).astype(np.int64) + qmin
    # A range decoder reads past the end of its data as zeros and ignores what it does not need:
    # only coding the symbols again shows that the payload is exactly theirs, no byte missing or extra.
    if encode_symbols(symbols, qmin, counts) != payload:
        raise ValueError("the payload is not exactly the coded symbols (bytes missing or extra)")
    return symbols
