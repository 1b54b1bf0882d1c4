"""Tests of the SR networks, their registry, ``pclesr models`` and the model benchmark."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from napari_pclesr import models
from napari_pclesr.baselines import gaussian_blur
from napari_pclesr.cli import main as cli_main
from napari_pclesr.models.fsrcnn import FORMULATIONS

REPO_ROOT = Path(__file__).resolve().parents[1]

# Small configurations, so that every architecture runs in milliseconds.
TINY = {
    "fsrcnn": {"features": 8, "shrink_features": 4, "mapping_layers": 1},
    "edsr": {"blocks": 2, "features": 8},
    "edsr_large": {"blocks": 1, "features": 8},
    "densenet_sr": {"low_features": 8, "blocks": 2, "layers": 3, "growth": 4},
}


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (it holds the plain reference implementations)."""
    path = REPO_ROOT / "benchmarks" / "bench_models.py"
    spec = importlib.util.spec_from_file_location("bench_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomise(model: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values, so that equality tests are not trivially met."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def test_registry_lists_the_issue_models():
    assert {"fsrcnn", "edsr", "edsr_large", "densenet_sr"} <= set(models.available())
    assert models.available() == sorted(models.available())


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_every_model_maps_b1hw_to_scaled_frames(name, scale):
    torch.manual_seed(0)
    model = models.create(name, scale=scale, **TINY[name])
    frames = torch.rand(2, 1, 7, 10)
    out = model(frames)
    assert out.shape == (2, 1, 7 * scale, 10 * scale)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert model.scale == scale
    assert model.arch == name
    # the frames are processed independently: the batch gives what each frame gives alone
    with torch.no_grad():
        torch.testing.assert_close(model(frames[1:]), model(frames)[1:], atol=1e-5, rtol=1e-5)


def test_densenet_output_is_a_sigmoid():
    model = _randomise(models.create("densenet_sr", scale=2, **TINY["densenet_sr"]), std=0.05)
    frames = torch.rand(1, 1, 9, 9)
    with torch.no_grad():
        out = model(frames)
        logits = model.integration(model.upsampler(model.dense(model.low_level(frames))))
    torch.testing.assert_close(out, torch.sigmoid(logits))
    assert out.min() > 0 and out.max() < 1 and out.std() > 1e-3


def test_fsrcnn_weight_count_is_12464():
    # 5·5·1·56 + 56·12 + 4·(3·3·12·12) + 12·56 + 9·9·56·1
    #   = 1400 + 672 + 5184 + 672 + 4536 = 12,464 convolution weights
    by_hand = 5 * 5 * 56 + 56 * 12 + 4 * 9 * 12 * 12 + 12 * 56 + 9 * 9 * 56
    assert by_hand == 12_464
    for scale in (1, 2, 4, 8):
        model = models.create("fsrcnn", scale=scale)
        weights = sum(
            p.numel()
            for name, p in model.named_parameters()
            if name.endswith("weight") and p.ndim == 4
        )
        assert weights == 12_464
        # biases: 56 + 12 + 4·12 + 56 + 1 = 173; PReLU slopes: 56 + 12 + 4·12 + 56 = 172
        assert models.count_parameters(model) == 12_464 + 173 + 172


def test_edsr_baseline_has_1219841_parameters():
    # head 1·64·9 + 64 = 640; 16 blocks · 2 · (64·64·9 + 64) = 1,181,696;
    # body conv 64·64·9 + 64 = 36,928; tail 64·9 = 576 (no bias); learnable mean 1
    by_hand = 640 + 16 * 2 * (64 * 64 * 9 + 64) + (64 * 64 * 9 + 64) + 64 * 9 + 1
    assert by_hand == 1_219_841
    model = models.create("edsr")
    assert models.count_parameters(model) == 1_219_841
    assert models.count_parameters(model, trainable_only=True) == 1_219_841
    # each ×2 step adds a 3×3 conv 64 → 256: 64·256·9 + 256 = 147,712
    assert models.count_parameters(models.create("edsr", scale=4)) == 1_219_841 + 2 * 147_712


def test_edsr_large_parameter_count():
    # 32 blocks, 256 features: head 2,560; blocks 32·2·590,080; body conv 590,080;
    # tail 256·9 = 2,304; mean 1
    by_hand = 2_560 + 32 * 2 * 590_080 + 590_080 + 2_304 + 1
    with torch.device("meta"):  # 38 M parameters: count without allocating them
        model = models.create("edsr_large")
    assert models.count_parameters(model) == by_hand == 38_360_065
    assert model.hparams["res_scale"] == 0.1


def test_densenet_sr_parameter_count_by_hand():
    # conv 1→64: 1·64·9 + 64 = 640
    # conv 64→128: 64·128·9 + 128 = 73,856
    # dense block: layer i (1..8) sees 128 + 16·(i−1) channels, 3×3 conv to 16 with bias:
    #   Σ inputs = 8·128 + 16·(0+1+…+7) = 1024 + 448 = 1472; weights 1472·16·9 = 211,968;
    #   biases 8·16 = 128; one block 212,096; 12 blocks 2,545,152
    # integration conv 128→1: 128·9 + 1 = 1,153
    per_block = (8 * 128 + 16 * sum(range(8))) * 16 * 9 + 8 * 16
    assert per_block == 212_096
    by_hand = 640 + 73_856 + 12 * per_block + 1_153
    assert by_hand == 2_620_801
    assert models.count_parameters(models.create("densenet_sr")) == by_hand
    # each ×2 sub-pixel block: conv 128 → 512, 128·512·9 + 512 = 590,336
    assert models.count_parameters(models.create("densenet_sr", scale=2)) == by_hand + 590_336


@pytest.mark.parametrize("scale", [1, 2])
def test_fsrcnn_formulations_give_the_same_output(scale):
    model = _randomise(models.create("fsrcnn", scale=scale)).eval()
    state = model.state_dict()
    frames = torch.rand(2, 1, 23, 17)
    outputs = {}
    for formulation in FORMULATIONS:
        fresh = models.create("fsrcnn", scale=scale)
        fresh.load_state_dict(state)  # one state dict fits every formulation
        fresh.formulation = formulation
        with torch.inference_mode():
            outputs[formulation] = fresh(frames)
    reference = outputs["conv_transpose"]
    assert reference.abs().max() > 0.1  # not a trivially small output
    for formulation, out in outputs.items():
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5, msg=formulation)


def test_fsrcnn_default_formulation_is_the_measured_fastest():
    assert models.create("fsrcnn").formulation == "rows"
    with pytest.raises(ValueError, match="rows, conv2d"):
        models.create("fsrcnn").formulation = "winograd"


@pytest.mark.parametrize("name", ["fsrcnn", "edsr", "densenet_sr", "edsr_large"])
@pytest.mark.parametrize("scale", [1, 2])
def test_models_equal_independent_reference_with_same_weights(bench, name, scale):
    model = _randomise(models.create(name, scale=scale, **TINY[name]), std=0.2).eval()
    reference = bench.reference_for(model).eval()
    frames = torch.rand(2, 1, 13, 11)
    with torch.inference_mode():
        ours, theirs = model(frames), reference(frames)
    assert theirs.std() > 1e-3
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_densenet_gradients_equal_the_concatenating_reference(bench):
    # The accumulating dense block must train exactly like the plain definition.
    model = _randomise(models.create("densenet_sr", **TINY["densenet_sr"]).double(), std=0.3)
    reference = bench.reference_for(model).double()
    frames = torch.rand(2, 1, 8, 9, dtype=torch.float64)
    grads = []
    for network in (model, reference):
        network.zero_grad()
        network(frames).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in network.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", ["fsrcnn", "edsr", "densenet_sr"])
def test_overfitting_one_batch_drives_the_loss_down_tenfold(name):
    torch.manual_seed(0)
    model = models.create(name, scale=2, **TINY[name])
    # smooth frames in [0, 1], and their 2×2 means as the input
    generator = torch.Generator().manual_seed(1)
    hr = gaussian_blur(torch.rand(4, 1, 16, 16, generator=generator), 1.5)
    low, high = hr.amin((2, 3), keepdim=True), hr.amax((2, 3), keepdim=True)
    hr = (hr - low) / (high - low)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    start = time.perf_counter()
    for _ in range(400):
        loss = torch.nn.functional.l1_loss(model(lr), hr)
        first = loss.item() if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if loss.item() < first / 10:
            break
    assert loss.item() < first / 10, (first, loss.item())
    assert (
        time.perf_counter() - start < 60
    )  # a budget, not a benchmark: a loaded CI machine must pass


def test_hparams_rebuild_the_same_network():
    for name in models.available():
        with torch.device("meta"):
            model = models.create(name, scale=4)
            rebuilt = models.create(name, **model.hparams)
        assert rebuilt.hparams == model.hparams
        assert set(model.hparams) == {"scale", *models.default_hparams(name)}
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in model.state_dict().items()
        }


def test_state_dict_round_trip_reproduces_outputs():
    model = _randomise(models.create("edsr", scale=2, **TINY["edsr"])).eval()
    rebuilt = models.create("edsr", **model.hparams)
    rebuilt.load_state_dict(model.state_dict())
    frames = torch.rand(1, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(frames), model(frames))


def test_default_hparams_are_a_copy():
    defaults = models.default_hparams("edsr")
    assert defaults == {"blocks": 16, "features": 64, "res_scale": 1.0, "mean": 0.5}
    defaults["blocks"] = 99
    assert models.default_hparams("edsr")["blocks"] == 16
    assert models.default_hparams("edsr_large") == {
        "blocks": 32,
        "features": 256,
        "res_scale": 0.1,
        "mean": 0.5,
    }


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("vdsr", {}, "unknown model 'vdsr'; available models: densenet_sr, edsr"),
        ("fsrcnn", {"scale": 3}, "scale must be one of 1, 2, 4, 8"),
        ("fsrcnn", {"scale": 2.0}, "scale must be one of"),
        ("edsr", {"scale": True}, "scale must be one of"),
        ("fsrcnn", {"features": -4}, "features must be a whole number >= 1, got -4"),
        ("edsr", {"features": 0}, "features must be a whole number >= 1"),
        ("densenet_sr", {"growth": 2.5}, "growth must be a whole number"),
        ("edsr", {"res_scale": -0.1}, "res_scale must be a finite number > 0"),
        ("edsr", {"mean": float("nan")}, "mean must be a finite number"),
        ("edsr", {"channels": 3}, "unknown hyper-parameter.*channels.*accepts: scale, blocks"),
    ],
)
def test_bad_configurations_give_clear_errors(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.create(name, **kwargs)


def test_bad_input_shape_gives_clear_error():
    model = models.create("fsrcnn")
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\), got \(1, 3, 8, 8\)"):
        model(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="frames\\[:, None\\]"):
        model(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.ones(1, 1, 8, 8, dtype=torch.int64))


def test_register_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        models.register("edsr", models.EDSR, {}, "duplicate")


def test_cli_models_lists_registry_with_counts(capsys):
    assert cli_main(["models"]) == 0
    text = capsys.readouterr().out
    assert "1,219,841" in text and "12,809" in text and "2,620,801" in text
    assert "wiener" in text and "richardson_lucy" in text
    assert cli_main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    counts = {row["name"]: row["parameters"] for row in listing["models"]}
    assert counts["edsr"]["1"] == 1_219_841
    assert counts["densenet_sr"]["2"] == models.count_parameters(
        models.create("densenet_sr", scale=2)
    )
    assert {row["name"] for row in listing["baselines"]} >= {"bicubic", "tv", "unsharp"}


def test_benchmark_quick_run(bench, capsys):
    start = time.perf_counter()
    assert bench.main(["--quick", "--models", "fsrcnn", "edsr", "densenet_sr"]) == 0
    text = capsys.readouterr().out
    for name in ("fsrcnn", "edsr", "densenet_sr"):
        assert f"{name} " in text
    assert "speedup" in text and "GFLOP/s" in text
    assert time.perf_counter() - start < 30


def test_benchmark_counts_flops_of_the_definition(bench):
    # FSRCNN ×1 on a 10×10 frame: 2 FLOP per multiply-add, 12,464 multiply-adds per pixel
    gflop = bench.gflop_per_frame("fsrcnn", models.create("fsrcnn").hparams, 10)
    assert gflop == pytest.approx(2 * 12_464 * 100 / 1e9)
