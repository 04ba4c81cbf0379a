"""Entropy model, quantisers, range coding and the .tnrv container, on synthetic data."""

import random

import numpy as np
import pytest
import torch

from tnerv.codec.bitstream import BitstreamError, TensorSection, pack, unpack
from tnerv.codec.entropy import (
    LIKELIHOOD_FLOOR,
    FactorizedDensity,
    counts_from_symbols,
    decode_symbols,
    encode_symbols,
    lower_bound,
    probabilities_to_counts,
)
from tnerv.codec.quantize import LearnedQuantizer, as_float32, uniform_quantize


def laplace_symbols(n: int = 20000, scale: float = 4.0, seed: int = 0) -> np.ndarray:
    return np.round(np.random.default_rng(seed).laplace(0, scale, n)).astype(np.int64)


def test_density_is_a_distribution_over_the_integers():
    density = FactorizedDensity(init_scale=10)
    q = torch.arange(-2000, 2001, dtype=torch.float32)
    assert density.likelihood(q).sum().item() == pytest.approx(1.0, abs=1e-3)


def test_density_learns_close_to_the_empirical_entropy():
    torch.manual_seed(0)
    symbols = laplace_symbols()
    values, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    entropy_bits = -(counts * np.log2(p)).sum()
    density = FactorizedDensity(init_scale=10)
    optimizer = torch.optim.Adam(density.parameters(), lr=0.02)
    q = torch.from_numpy(symbols).float()
    for _ in range(400):
        optimizer.zero_grad()
        loss = density.bits(q) / len(q)
        loss.backward()
        optimizer.step()
    assert density.bits(q).item() < entropy_bits * 1.02


def test_lower_bound_floors_forward_and_passes_gradients_that_raise_the_value():
    x = torch.tensor([1e-12, 1e-12, 0.5], requires_grad=True)
    y = lower_bound(x, 1e-9)
    assert torch.equal(y.detach(), x.detach().clamp_min(1e-9))
    (y * torch.tensor([-1.0, 1.0, 1.0])).sum().backward()
    # Below the bound only the gradient whose descent step raises x passes; above it, every one.
    assert x.grad.tolist() == [-1.0, 0.0, 1.0]


def test_a_symbol_below_the_likelihood_floor_gets_a_rate_gradient_that_raises_its_likelihood():
    torch.manual_seed(0)
    density = FactorizedDensity(init_scale=10)
    q = torch.tensor([300.0])
    before = density.likelihood(q).item()
    assert 0 < before < LIKELIHOOD_FLOOR
    bits = density.bits(q)
    assert bits.item() == pytest.approx(-np.log2(LIKELIHOOD_FLOOR), rel=1e-6)  # the forward value is floored
    bits.backward()
    grads = [p.grad for p in density.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        for p in density.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad / max(g.abs().max() for g in grads)
    assert density.likelihood(q).item() > before


def test_counts_are_positive_and_sum_to_the_precision():
    counts = probabilities_to_counts(np.array([0.5, 0.25, 1e-12, 0.25 - 1e-12]))
    assert counts.sum() == 1 << 16 and counts.min() >= 1
    assert counts[0] == pytest.approx(1 << 15, abs=2)
    single = probabilities_to_counts(np.array([1.0]))
    assert single.tolist() == [1 << 16]


def test_range_coding_round_trips_at_the_table_entropy():
    symbols = laplace_symbols(50000)
    qmin, qmax = int(symbols.min()), int(symbols.max())
    counts = counts_from_symbols(symbols, qmin, qmax)
    payload = encode_symbols(symbols, qmin, counts)
    assert np.array_equal(decode_symbols(payload, qmin, counts, symbols.size), symbols)
    ideal_bits = -np.log2(counts[symbols - qmin] / counts.sum()).sum()
    assert len(payload) * 8 == pytest.approx(ideal_bits, rel=0.01)
    assert encode_symbols(np.zeros(0, dtype=np.int64), 0, counts) == b""


def test_a_tensor_of_one_repeated_symbol_costs_nothing():
    symbols = np.full(100, 7)
    counts = counts_from_symbols(symbols, 7, 7)
    assert encode_symbols(symbols, 7, counts) == b""
    assert np.array_equal(decode_symbols(b"", 7, counts, 100), symbols)


def test_learned_quantizer_rounds_with_a_straight_through_gradient():
    torch.manual_seed(0)
    x = torch.randn(1000, requires_grad=True)
    quantizer = LearnedQuantizer(x, init_bits=6)
    x_hat, noisy = quantizer(x)
    step = quantizer.step.item()
    assert (x_hat - x).abs().max().item() <= step / 2 + 1e-5
    assert (noisy - quantizer.scaled(x)).abs().max().item() <= 0.5
    x_hat.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))  # rounding passes the gradient straight through
    assert quantizer.log_step.grad is not None
    q = quantizer.quantize(x.detach())
    assert torch.allclose(q.dequantize(), x_hat.detach(), atol=1e-5)


def test_uniform_quantization_error_is_within_half_a_step():
    x = torch.randn(500)
    q = uniform_quantize(x, 8)
    assert q.symbols.min() == 0 and q.symbols.max() == 255
    assert (q.dequantize() - x).abs().max().item() <= q.step / 2 + 1e-6


def sample_file() -> tuple[dict, list[TensorSection], bytes]:
    sections = []
    for seed in range(3):
        symbols = laplace_symbols(3000, seed=seed)
        qmin, qmax = int(symbols.min()), int(symbols.max())
        counts = counts_from_symbols(symbols, qmin, qmax)
        step = as_float32(0.01 * (seed + 1))
        sections.append(TensorSection(step, 0.5, qmin, counts, encode_symbols(symbols, qmin, counts)))
    header = {"model": "test", "tensors": [{"name": f"t{i}", "shape": [3000]} for i in range(3)]}
    return header, sections, pack(header, sections)


def test_bitstream_round_trip():
    header, sections, data = sample_file()
    got_header, got = unpack(data)
    assert got_header == header
    for a, b in zip(sections, got):
        assert (a.step, a.offset, a.qmin, a.payload) == (b.step, b.offset, b.qmin, b.payload)
        assert np.array_equal(a.counts, b.counts)


def test_every_truncation_is_rejected():
    _, _, data = sample_file()
    for cut in list(range(0, 64)) + list(range(64, len(data), 97)) + [len(data) - 1]:
        with pytest.raises(BitstreamError, match="truncated|not a tnerv bitstream|malformed"):
            unpack(data[:cut])


def test_every_bit_flip_is_rejected_and_names_its_section():
    _, _, data = sample_file()
    rng = random.Random(0)
    positions = sorted(rng.sample(range(len(data)), 300))
    for pos in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        with pytest.raises(BitstreamError) as error:
            unpack(bytes(flipped))
        assert any(word in str(error.value) for word in ("section", "version", "bitstream", "bytes after"))


def test_foreign_and_wrong_version_files():
    with pytest.raises(BitstreamError, match="not a tnerv bitstream"):
        unpack(b"\x00\x00\x00\x1cftypisom" + bytes(100))
    _, _, data = sample_file()
    newer = data[:4] + (99).to_bytes(2, "little") + data[6:]
    with pytest.raises(BitstreamError, match="version 99"):
        unpack(newer)
