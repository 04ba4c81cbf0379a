"""NNPACK's convolutions: the same function as PyTorch's within float32 rounding, in the forward pass
and both gradients; only eligible convolutions are switched, and back; fp64 and small maps keep
PyTorch's own kernels. Whole models on the NNPACK path: tests/test_execution.py."""

import copy

import pytest
import torch
from torch import nn

from tnerv.errors import TnervError
from tnerv.models.nnpack import MIN_PIXELS, NNPACKConv2d, available, use_nnpack
from tnerv.train import TrainConfig

# The CPU wheels of x86-64 and arm64 Linux bundle NNPACK; where it is missing nothing here applies.
pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no NNPACK")

# Winograd F(6x6, 3x3) multiplies by transform constants up to ~10 before and after the products, so its
# float32 rounding is about 100 ulps of the output's scale (measured: 6e-6 to 8e-6 relative); the FFT
# (5x5) and 1x1 kernels stay within ~1e-6. 1e-4 of the largest value is 10x the worst measured.
RELATIVE = 1e-4


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((got - expected).abs().max() <= RELATIVE * expected.abs().max())


@pytest.mark.parametrize("kernel, padding", [(3, 1), (5, 2), (1, 0), (3, 0)])
def test_nnpack_convolution_and_its_gradients_match_pytorch(kernel, padding):
    torch.manual_seed(0)
    plain = nn.Conv2d(12, 20, kernel, padding=padding)
    fast = copy.deepcopy(plain)
    assert use_nnpack(fast) == 1 and type(fast) is NNPACKConv2d
    x = torch.randn(2, 12, 32, 40)
    outputs, grads = [], []
    for conv in (plain, fast):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
        outputs.append(out)
        grads.append([xi.grad, conv.weight.grad, conv.bias.grad])
    assert not torch.equal(outputs[1], outputs[0])  # NNPACK did run: another algorithm, other roundings
    assert close(outputs[1], outputs[0])
    for got, expected in zip(grads[1], grads[0]):
        assert close(got, expected)


def test_only_eligible_convolutions_switch_and_the_state_is_unchanged():
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),  # eligible
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: NNPACK has no groups
        nn.Conv2d(8, 8, 2, stride=2),  # strided: NNPACK's output convolution has stride 1 only
        nn.Conv2d(8, 8, 3, padding=1, dilation=2),
        nn.Conv2d(8, 3, 1),  # eligible
    )
    keys = list(model.state_dict())
    assert use_nnpack(model) == 2
    assert [type(m).__name__ for m in model] == ["NNPACKConv2d", "Conv2d", "Conv2d", "Conv2d", "NNPACKConv2d"]
    assert list(model.state_dict()) == keys
    use_nnpack(model, enabled=False)
    assert all(type(m) is nn.Conv2d for m in model)


def test_float64_and_small_maps_keep_pytorch_kernels():
    torch.manual_seed(0)
    plain = nn.Conv2d(6, 8, 3, padding=1)
    fast = copy.deepcopy(plain)
    use_nnpack(fast)
    x = torch.randn(1, 6, 40, 40)
    assert torch.equal(fast.double()(x.double()), plain.double()(x.double()))  # float64: exactly PyTorch's
    small = torch.randn(1, 6, 8, 16).float()  # 128 output pixels < MIN_PIXELS
    assert 8 * 16 < MIN_PIXELS and torch.equal(fast.float()(small), plain.float()(small))


def test_a_shape_nnpack_refuses_runs_on_pytorch_kernels(monkeypatch):
    # NNPACK fails on some shapes (workspace limits, pytorch#83579); the convolution and both gradients
    # then come from PyTorch, exactly, rather than an error (a decoder would report a valid file as broken).
    def refuse(*args):
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    torch.manual_seed(0)
    plain = nn.Conv2d(6, 8, 3, padding=1)
    fast = copy.deepcopy(plain)
    use_nnpack(fast)
    x = torch.randn(2, 6, 32, 32)
    results = []
    for conv in (plain, fast):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        if conv is fast:  # forward through NNPACK, then a refused input gradient
            monkeypatch.setattr(torch, "_nnpack_spatial_convolution", refuse)
        out.backward(torch.ones_like(out))
        results.append((xi.grad, conv.weight.grad, conv.bias.grad))
    for got, expected in zip(*reversed(results)):
        assert torch.equal(got, expected)
    with torch.no_grad():
        assert torch.equal(fast(x), plain(x))  # a refused forward pass


def test_a_failed_nnpack_call_is_counted_not_hidden(monkeypatch):
    # An NNPACK failure (a refused shape, or out of memory) runs PyTorch's kernels; a decode report must
    # then not claim NNPACK did the work: the module counts its calls and failures, with the message.
    from tnerv.models.nnpack import fallbacks

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1))
    use_nnpack(model)
    x = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        model(x)
    assert fallbacks(model) == (0, 2, "")
    real = torch._nnpack_spatial_convolution
    calls = []

    def fail_second(*args):  # the first convolution runs, the second fails as an allocation would
        calls.append(1)
        if len(calls) % 2 == 0:
            raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed:\n out of memory")
        return real(*args)

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", fail_second)
    with torch.no_grad():
        model(x)
    assert fallbacks(model) == (1, 4, "NNPACK SpatialConvolution_updateOutput failed: out of memory")
    use_nnpack(model)  # switching again starts the counts again
    assert fallbacks(model) == (0, 0, "")


def test_nnpack_and_channels_last_together_are_refused():
    with pytest.raises(TnervError, match="choose nnpack or channels_last"):
        TrainConfig(nnpack=True, channels_last=True).validate()
