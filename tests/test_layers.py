"""The shared blocks T-NeRV added to tnerv.models.layers (reused by HNeRV, DNeRV, FFNeRV, E-NeRV, C-NeRV)."""

import pytest
import torch
import torch.nn.functional as F

from tnerv.models.layers import (
    AdaIN,
    ChannelsFirstLayerNorm,
    ConvNeXtBlock,
    ConvNeXtEncoder,
    FlowAggregator,
    ModulatedUpsampleBlock,
    TemporalGrid,
    backward_warp,
    output_activation,
)


def test_convnext_block_keeps_shape_and_starts_near_identity():
    block = ConvNeXtBlock(16)
    x = torch.randn(2, 16, 8, 12)
    y = block(x)
    assert y.shape == x.shape
    assert (y - x).abs().max() < 1e-3  # layer scale 1e-6 at initialisation
    # depthwise 7x7 (+bias), LayerNorm, 16 -> 64 -> 16 linears, layer scale
    assert sum(p.numel() for p in block.parameters()) == 16 * 49 + 16 + 32 + 16 * 64 + 64 + 64 * 16 + 16 + 16


def test_convnext_encoder_output_shape_and_hnerv_tiny_size():
    enc = ConvNeXtEncoder(strides=(5, 2, 2, 2, 2), channels=(64, 64, 64, 64, 16), blocks=(1, 1, 1, 1, 1))
    assert enc(torch.rand(1, 3, 80, 160)).shape == (1, 16, 1, 2)
    # stem conv 3->64 (k5) + LN; 3x (LN + conv 64->64 k2); LN + conv 64->16 k2; one block per stage.
    block = lambda c: c * 49 + c + 2 * c + c * 4 * c + 4 * c + 4 * c * c + c + c  # noqa: E731
    downsampling = (3 * 64 * 25 + 64 + 128) + 3 * (128 + 64 * 64 * 4 + 64) + (128 + 64 * 16 * 4 + 16)
    expected = downsampling + 4 * block(64) + block(16)
    assert sum(p.numel() for p in enc.parameters()) == expected


def test_convnext_encoder_any_aspect_ratio_and_length_check():
    enc = ConvNeXtEncoder(strides=(3, 2, 1), channels=(8, 8, 4), blocks=(1, 2, 1))
    assert enc(torch.rand(2, 3, 36, 54)).shape == (2, 4, 6, 9)
    with pytest.raises(ValueError, match="one stride, width and block count per stage"):
        ConvNeXtEncoder(strides=(2, 2), channels=(8,), blocks=(1, 1))


def test_adain_formula():
    torch.manual_seed(0)
    layer = AdaIN(channels=3, cond_dim=4)
    x, z = torch.randn(2, 3, 5, 7), torch.randn(2, 4)
    gamma, beta = layer.affine(z).chunk(2, dim=1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
    torch.testing.assert_close(layer(x, z), expected, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in layer.parameters()) == 4 * 6 + 6  # one linear cond -> 2C


def test_modulated_upsample_block_shapes_and_sizes():
    block = ModulatedUpsampleBlock(8, 6, stride=2, kernel_size=3, cond_dim=4)
    assert block(torch.randn(2, 8, 4, 5), torch.randn(2, 4)).shape == (2, 6, 8, 10)
    plain = ModulatedUpsampleBlock(8, 6, stride=2, kernel_size=3)
    assert plain.adain is None and plain(torch.randn(1, 8, 4, 5)).shape == (1, 6, 8, 10)
    assert sum(p.numel() for p in block.parameters()) - sum(p.numel() for p in plain.parameters()) == 4 * 16 + 16


def test_temporal_grid_interpolates_linearly_in_time():
    grid = TemporalGrid(resolutions=(4, 8), channels=2, height=3, width=5)
    assert grid.out_channels == 4
    g4, g8 = grid.slices[0], grid.slices[1]
    out = grid(torch.tensor([0.0, 0.25, 0.125, 0.99]))
    assert out.shape == (4, 4, 3, 5)
    torch.testing.assert_close(out[0], torch.cat([g4[0], g8[0]]))  # t = 0: first slices
    torch.testing.assert_close(out[1], torch.cat([g4[1], g8[2]]))  # t = 1/4: exactly slice 1 and 2
    torch.testing.assert_close(out[2, :2], (g4[0] + g4[1]) / 2)  # halfway between two slices
    torch.testing.assert_close(out[2, 2:], g8[1])
    torch.testing.assert_close(out[3], torch.cat([g4[3], g8[7]]))  # past the last slice: clamped
    # t = i / N lands on slice i when the grid has N slices, despite float rounding
    i = torch.arange(10, dtype=torch.float32)
    exact = TemporalGrid((10,), 1, 1, 1)
    torch.testing.assert_close(exact(i / 10), exact.slices[0][:10])


def test_temporal_grid_trains():
    grid = TemporalGrid((2, 3), 1, 2, 2)
    grid(torch.tensor([0.3])).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in grid.parameters())


def test_backward_warp_zero_flow_is_identity_and_integer_flow_shifts():
    x = torch.rand(2, 3, 6, 8)
    torch.testing.assert_close(backward_warp(x, torch.zeros(2, 2, 6, 8)), x)
    flow = torch.zeros(2, 2, 6, 8)
    flow[:, 0] = 1.0  # sample one pixel to the right
    torch.testing.assert_close(backward_warp(x, flow)[..., :-1], x[..., 1:])
    flow = torch.zeros(2, 2, 6, 8)
    flow[:, 1] = -2.0  # two pixels up
    torch.testing.assert_close(backward_warp(x, flow)[..., 2:, :], x[..., :-2, :])


def _head(k: int, h: int, w: int, flow=(0.0, 0.0), logits=None) -> torch.Tensor:
    head = torch.zeros(1, 3 * k, h, w)
    head[:, 0 : 2 * k : 2] = flow[0]
    head[:, 1 : 2 * k : 2] = flow[1]
    if logits is not None:
        head[:, 2 * k :] = torch.tensor(logits).view(1, k, 1, 1)
    return head


def test_flow_aggregator_weights_and_invalid_neighbours():
    agg = FlowAggregator((-2, -1, 1, 2))
    assert agg.head_channels == 12
    nb = torch.rand(1, 4, 3, 8, 8)
    valid = torch.tensor([[True, True, True, True]])
    # equal logits, zero flow: the mean of the neighbours
    torch.testing.assert_close(agg.aggregate(nb, valid, _head(4, 2, 2)), nb.mean(dim=1))
    # invalid neighbours get zero weight, whatever their logits or content
    valid = torch.tensor([[False, True, False, False]])
    torch.testing.assert_close(agg.aggregate(nb, valid, _head(4, 2, 2, logits=[9.0, 0.0, 5.0, 5.0])), nb[:, 1])
    # no valid neighbour at all: a zero frame, no NaN
    out = agg.aggregate(nb, torch.zeros(1, 4, dtype=torch.bool), _head(4, 2, 2))
    assert torch.equal(out, torch.zeros_like(out))


def test_flow_aggregator_scales_flows_to_the_frame_size():
    agg = FlowAggregator((1,))
    nb = torch.rand(1, 1, 3, 8, 16)
    # a flow of 1 pixel at quarter resolution is 4 pixels at full resolution
    out = agg.aggregate(nb, torch.tensor([[True]]), _head(1, 2, 4, flow=(1.0, 0.0)))
    torch.testing.assert_close(out[..., :-4], nb[:, 0, ..., 4:])


def test_flow_aggregator_blend_and_neighbour_indices():
    agg = FlowAggregator((-2, -1, 1, 2))
    i, a = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    logits = torch.zeros(2, 2, 4, 4)
    torch.testing.assert_close(agg.blend(i, a, logits), (i + a) / 2)
    logits[:, 0] = 30.0
    torch.testing.assert_close(agg.blend(i, a, logits), i)
    idx, valid = agg.neighbour_indices(torch.tensor([0, 1, 5]), num_frames=6)
    assert idx.tolist() == [[0, 0, 1, 2], [0, 0, 2, 3], [3, 4, 5, 5]]
    assert valid.tolist() == [[False, False, True, True], [False, True, True, True], [True, True, False, False]]
    assert FlowAggregator((-1, 0, 1)).head_channels == 9  # FFNeRV's window may hold the frame itself
    with pytest.raises(ValueError):
        FlowAggregator((-1, 1, 1))


def test_flow_aggregator_gradients_reach_flows_and_logits():
    agg = FlowAggregator((-1, 1))
    nb = torch.rand(1, 2, 3, 8, 8)
    head = torch.randn(1, 6, 4, 4, requires_grad=True)
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    out, _ = agg(torch.rand(1, 3, 8, 8), nb, torch.ones(1, 2, dtype=torch.bool), head, logits)
    F.l1_loss(out, torch.rand_like(out)).backward()
    assert head.grad[:, :4].abs().sum() > 0 and head.grad[:, 4:].abs().sum() > 0 and logits.grad.abs().sum() > 0


def test_reference_rounding_channels_first_layer_norm():
    """The encoder's channels-first LayerNorm is computed as ConvNeXt's reference computes it (mean and
    biased variance over C, output in NCHW layout): with it, tnerv's HNeRV trains bit for bit like the
    official code (benchmarks/parity.py: 29.02 dB for both at seed 1, where a permute to channels-last,
    which leaves a channels-last tensor for the next convolution, gave 28.51)."""
    torch.manual_seed(0)
    norm = ChannelsFirstLayerNorm(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    out = norm(x)
    assert out.is_contiguous()  # NCHW: the next convolution runs the same kernels as the reference's
    mean = x.mean(1, keepdim=True)
    by_hand = (x - mean) / torch.sqrt((x - mean).pow(2).mean(1, keepdim=True) + 1e-6)
    assert torch.equal(out, norm.weight[:, None, None] * by_hand + norm.bias[:, None, None])
    as_layer_norm = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, as_layer_norm, rtol=0, atol=1e-5)


def test_tanh_output_rounds_as_the_references_write_it():
    """The tanh output map gives the bits of the official code's writings, HNeRV's tanh(x) * 0.5 + 0.5 and
    NeRV's and FFNeRV's (tanh(x) + 1) * 0.5 (bitwise identical to each other: halving is exact), values and
    gradients. sigmoid(2x), the same function on paper, rounds differently: this test tells them apart."""
    z = (torch.randn(100_000) * 4).requires_grad_()
    upstream = torch.randn(100_000)
    ours = output_activation(z, "tanh")
    (grad,) = torch.autograd.grad(ours, z, upstream)
    for reference in (torch.tanh(z) * 0.5 + 0.5, (torch.tanh(z) + 1) * 0.5):
        (reference_grad,) = torch.autograd.grad(reference, z, upstream)
        assert torch.equal(ours, reference) and torch.equal(grad, reference_grad)
    assert not torch.equal(ours, torch.sigmoid(2 * z))  # a formula with other rounding fails the test
    assert not torch.equal(output_activation(z, "sigmoid"), ours)
    assert output_activation(torch.tensor([0.0, 50.0, -50.0]), "tanh").tolist() == [0.5, 1.0, 0.0]
