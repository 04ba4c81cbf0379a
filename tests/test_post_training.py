"""Post-training compression of the baselines: pruning (NeRV) and quantisation-aware fine-tuning (FFNeRV)."""

import pytest
import torch

from tnerv.codec.post_training import QuantizationAware, fake_quantize
from tnerv.models import create_model, load_preset, model_class
from tnerv.train import CHECKPOINT, TrainConfig, fit


def tiny(name: str, frames: torch.Tensor, **overrides):
    n, _, h, w = frames.shape
    torch.manual_seed(0)
    return create_model(name, load_preset(f"{name}-s-cpu").config(height=h, width=w, num_frames=n, **overrides))


def test_fake_quantize_rounds_forward_and_passes_gradients():
    # Seeded: unseeded, the values depended on the tests run before (after tests/test_compress.py alone,
    # one draw missed a level).
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)).requires_grad_()
    y = fake_quantize(x, 4)
    # Every value moves to the nearest of the 16 levels spanning [min, max] (a coarser grid moves some
    # by more than half a 4-bit step), and 1000 normal values land on every level.
    step = ((x.max() - x.min()) / 15).item()
    assert (y - x).abs().max().item() <= step / 2 + 1e-6
    levels = torch.round((y.detach() - x.min().detach()) / step)
    assert torch.unique(levels).tolist() == list(range(16))
    assert (levels * step + x.min().detach() - y).abs().max().item() < 1e-5  # on the grid, up to float rounding
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_nerv_prunes_its_decoder_weights_in_the_last_epochs(tiny_clip):
    assert model_class("nerv").post_training_prune == 0.4
    model = tiny("nerv", tiny_clip, stem_dims=(32,), channels=8)
    wrapped = QuantizationAware(model, model_class("nerv").post_training_bits, prune=0.4, phase_start=0.5)
    fit(wrapped, tiny_clip, TrainConfig(epochs=4, batch_size=4, lr=2e-3, eval_every=4), progress=False)
    named = dict(model.named_parameters())
    pruned = [n for n in wrapped.param_names if wrapped._mask(n) is not None]
    assert pruned and all(named[n].dim() > 1 for n in pruned)
    kept = sum(wrapped._mask(n).sum().item() for n in pruned) / sum(named[n].numel() for n in pruned)
    assert abs(kept - 0.6) < 0.01
    # In the file, every pruned weight becomes the same symbol: the most common one.
    state = wrapped.quantized_state()
    for n in pruned:
        symbols = state[n].symbols[~wrapped._mask(n)]
        assert len(torch.unique(symbols)) == 1


def test_pruning_masks_survive_a_resume(tiny_clip, tmp_path):
    def make():
        model = tiny("nerv", tiny_clip, stem_dims=(32,), channels=8)
        return QuantizationAware(model, {"decoder": 8, "grids": 8, "embeddings": 8}, prune=0.4, phase_start=0.25)

    config = TrainConfig(epochs=4, batch_size=4, lr=2e-3, eval_every=4, checkpoint_every=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = fit(make(), tiny_clip, config, tmp_path / "a", progress=False)

    def crash(epoch: int) -> None:
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the resume below must start from a checkpoint mid-phase
        fit(make(), tiny_clip, config, tmp_path / "b", progress=False, on_epoch_end=crash)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["epoch"] == 3
    resumed = fit(make(), tiny_clip, config, tmp_path / "b", resume=True, progress=False)
    assert resumed.report.psnr == straight.report.psnr


def test_ffnerv_fine_tunes_on_its_8_bit_grid(tiny_clip):
    assert model_class("ffnerv").post_training_qat
    model = tiny("ffnerv", tiny_clip)
    wrapped = QuantizationAware(model, model_class("ffnerv").post_training_bits, qat=True, phase_start=0.5)
    wrapped.on_step_start(5, 10)  # inside the phase (from half the steps on)
    name = next(n for n in wrapped.param_names if n.endswith("weight"))
    weight = dict(model.named_parameters())[name].detach()
    seen = wrapped.transform(name, weight).detach()
    # Each weight moves to the nearest level of its tensor's 8-bit grid: at most half a step (a coarser
    # grid, or none, moves some further), and the rounding did happen.
    step = ((weight.max() - weight.min()) / 255).item()
    assert (seen - weight).abs().max().item() <= step / 2 + 1e-7 and not torch.equal(seen, weight)
    wrapped.on_step_start(4, 10)  # before it, the weights are untouched
    assert torch.equal(wrapped.transform(name, dict(model.named_parameters())[name]), dict(model.named_parameters())[name])
