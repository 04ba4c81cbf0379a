"""Post-training compression of the baselines: pruning (NeRV) and quantisation-aware fine-tuning (FFNeRV)."""

import torch

from tnerv.codec.post_training import QuantizationAware, fake_quantize
from tnerv.models import create_model, load_preset, model_class
from tnerv.train import TrainConfig, fit


def tiny(name: str, frames: torch.Tensor, **overrides):
    n, _, h, w = frames.shape
    torch.manual_seed(0)
    return create_model(name, load_preset(f"{name}-s-cpu").config(height=h, width=w, num_frames=n, **overrides))


def test_fake_quantize_rounds_forward_and_passes_gradients():
    x = torch.randn(1000, requires_grad=True)
    y = fake_quantize(x, 4)
    assert len(torch.unique(torch.round(y.detach() * 1e4))) <= 16  # the grid, up to float rounding
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

    try:
        fit(make(), tiny_clip, config, tmp_path / "b", progress=False, on_epoch_end=crash)
    except KeyboardInterrupt:
        pass
    resumed = fit(make(), tiny_clip, config, tmp_path / "b", resume=True, progress=False)
    assert resumed.report.psnr == straight.report.psnr


def test_ffnerv_fine_tunes_on_its_8_bit_grid(tiny_clip):
    assert model_class("ffnerv").post_training_qat
    model = tiny("ffnerv", tiny_clip)
    wrapped = QuantizationAware(model, model_class("ffnerv").post_training_bits, qat=True, phase_start=0.5)
    wrapped.on_epoch_start(1, 2)  # inside the phase
    name = next(n for n in wrapped.param_names if n.endswith("weight"))
    seen = wrapped.transform(name, dict(model.named_parameters())[name])
    assert len(torch.unique(torch.round(seen.detach() * 1e6))) <= 256
    wrapped.on_epoch_start(0, 2)  # before it, the weights are untouched
    assert torch.equal(wrapped.transform(name, dict(model.named_parameters())[name]), dict(model.named_parameters())[name])
