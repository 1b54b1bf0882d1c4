"""Export to TorchScript, ONNX and bioimage.io: round trips for every registered network,
agreement with PyTorch, package validation, refusals and the command line."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from napari_pclesr import models
from napari_pclesr.cli import main
from napari_pclesr.data.patches import Normalisation
from napari_pclesr.export import _HALO as HALO
from napari_pclesr.export import (
    ExportError,
    MissingExtraError,
    _test_frame,
    export,
    export_bioimageio,
    export_onnx,
    export_torchscript,
    portable_network,
)
from napari_pclesr.models.densenet_sr import DenseBlock
from napari_pclesr.train.checkpoint import save_checkpoint

#: Small hyper-parameters, so that every registered network exports in a moment; a network
#: missing here is exported with its defaults.
TINY = {
    "fsrcnn": {"features": 8, "shrink_features": 4, "mapping_layers": 1},
    "edsr": {"blocks": 1, "features": 8},
    "edsr_large": {"blocks": 1, "features": 8},
    "densenet_sr": {"low_features": 8, "blocks": 1, "layers": 2, "growth": 4},
}
NORMALISATION = Normalisation(percentiles=(2.0, 98.0))
TOLERANCE = 1e-4

# TorchScript is deprecated in PyTorch, but it is one of the formats users ask for.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

has_onnx = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
has_bioimageio = importlib.util.find_spec("bioimageio") is not None and all(
    importlib.util.find_spec(m) for m in ("bioimageio.core", "bioimageio.spec")
)
needs_onnx = pytest.mark.skipif(not has_onnx, reason='needs "napari-pclesr[export]"')
needs_bioimageio = pytest.mark.skipif(not has_bioimageio, reason='needs "napari-pclesr[export]"')


def tiny_network(name: str, scale: int = 1) -> nn.Module:
    torch.manual_seed(0)
    network = models.create(name, scale=scale, **TINY.get(name, {}))
    # Random non-zero weights everywhere (FSRCNN's last layer starts near 0, EDSR's tail too),
    # so that a wrong export cannot hide behind a near-constant output.
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return network.eval()


def write_checkpoint(network: nn.Module, path):
    hparams = {k: v for k, v in network.hparams.items() if k != "scale"}
    payload = {
        "kind": "best",
        "iteration": 321,
        "model": {"name": network.arch, "hparams": hparams, "scale": network.scale},
        "state_dict": network.state_dict(),
        "normalisation": NORMALISATION.to_dict(),
        "config": {"model": network.arch, "loss": "ssim+l1", "batch_size": 16, "lr": 1e-4},
        "history": {},
    }
    return save_checkpoint(payload, path)


def pytorch_output(network: nn.Module, batch: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return network.eval()(batch).numpy()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a network connection to {address} was attempted")
        return original(self, address, *args, **kwargs)

    original = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)


def new_batch(shape=(3, 1, 23, 31)) -> torch.Tensor:
    """Frames of a batch size and shape that no export was traced or checked with."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(7))


# -- TorchScript --------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("name", models.available())
def test_torchscript_round_trip(tmp_path, name, scale):
    network = tiny_network(name, scale)
    checkpoint = write_checkpoint(network, tmp_path / "best.pt")
    report = export_torchscript(checkpoint, tmp_path / "model.pt")
    assert report.path == tmp_path / "model.pt"
    assert 0 <= report.differences["torchscript"] <= TOLERANCE

    extra = {"napari_pclesr": ""}
    loaded = torch.jit.load(str(report.path), _extra_files=extra)
    batch = new_batch()
    with torch.no_grad():
        exported = loaded(batch).numpy()
    expected = pytorch_output(network, batch)
    assert exported.shape == (3, 1, 23 * scale, 31 * scale)
    np.testing.assert_allclose(exported, expected, rtol=0, atol=TOLERANCE)
    metadata = json.loads(extra["napari_pclesr"])
    assert metadata["model"] == name and metadata["scale"] == scale
    assert metadata["normalisation"] == NORMALISATION.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "model.pt"]


def test_the_callers_network_is_left_alone(tmp_path):
    network = tiny_network("fsrcnn").train()
    export_torchscript(network, tmp_path / "model.pt")
    portable_network(network)
    assert network.training and network.formulation == "rows"
    assert all(p.requires_grad for p in network.parameters())


def test_portable_network_has_the_textbook_layer_forms_and_the_same_output():
    batch = new_batch()
    fsrcnn = tiny_network("fsrcnn")
    assert portable_network(fsrcnn).formulation == "conv2d"
    densenet = tiny_network("densenet_sr")
    portable = portable_network(densenet)
    assert not any(isinstance(m, DenseBlock) for m in portable.modules())
    for network in (fsrcnn, densenet):
        np.testing.assert_allclose(
            pytorch_output(portable_network(network), batch),
            pytorch_output(network, batch),
            rtol=0,
            atol=1e-6,
        )


# -- checks that catch a wrong export -----------------------------------------------------------


class NoisyNetwork(nn.Module):
    """Gives a different output on every call: no export can reproduce an earlier call."""

    scale = 1

    def forward(self, x):
        return x + torch.rand_like(x)


class FrozenShapeNetwork(nn.Module):
    """Adds zeros made by NumPy, which a trace records as a constant of the traced shape: the
    trace then fails on any other shape."""

    scale = 1

    def forward(self, x):
        return x + torch.from_numpy(np.zeros(tuple(x.shape), dtype=np.float32))


def test_an_export_that_differs_is_refused_and_nothing_is_written(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"an earlier export")
    with pytest.raises(ExportError, match=r"differs from the PyTorch network by up to"):
        export_torchscript(NoisyNetwork(), target, overwrite=True)
    assert target.read_bytes() == b"an earlier export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def test_an_export_that_froze_a_shape_is_refused(tmp_path):
    with pytest.raises(ExportError, match=r"fails on a batch of shape \(1, 1, 27, 45\)"):
        export_torchscript(FrozenShapeNetwork(), tmp_path / "model.pt")
    assert not list(tmp_path.iterdir())


def test_tolerance_is_applied(tmp_path):
    network = tiny_network("edsr")
    report = export_torchscript(network, tmp_path / "a.pt", tolerance=1.0)
    assert report.tolerance == 1.0
    with pytest.raises(ExportError, match="tolerance 0"):
        export_torchscript(NoisyNetwork(), tmp_path / "b.pt", tolerance=0.0)


# -- refusals -----------------------------------------------------------------------------------


def test_output_is_never_the_input_and_never_silently_replaced(tmp_path):
    checkpoint = write_checkpoint(tiny_network("fsrcnn"), tmp_path / "best.pt")
    before = checkpoint.read_bytes()
    with pytest.raises(ValueError, match=r"refusing to write .*best\.pt: it is the input"):
        export_torchscript(checkpoint, checkpoint, overwrite=True)
    assert checkpoint.read_bytes() == before
    export_torchscript(checkpoint, tmp_path / "model.pt")
    with pytest.raises(FileExistsError, match=r"already exists.*--overwrite"):
        export_torchscript(checkpoint, tmp_path / "model.pt")
    export_torchscript(checkpoint, tmp_path / "model.pt", overwrite=True)


def test_bad_sources_and_formats_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_torchscript(tmp_path / "missing.pt", tmp_path / "model.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read as a checkpoint"):
        export_torchscript(garbage, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="unknown export format 'tflite'; choose one of"):
        export(garbage, "tflite", tmp_path / "model.tflite")
    with pytest.raises(ValueError, match="give a checkpoint file or dict"):
        export_torchscript(42, tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.pt"]


def test_pretrained_names_are_resolved_by_inference(tmp_path, monkeypatch):
    network = tiny_network("fsrcnn")
    asked = []

    def resolve_model(source, device, scale=None):
        asked.append((source, str(device)))
        return network, NORMALISATION

    monkeypatch.setattr("napari_pclesr.infer.resolve_model", resolve_model)
    report = export_torchscript("pretrained:fsrcnn", tmp_path / "model.pt")
    assert asked == [("pretrained:fsrcnn", "cpu")]
    extra = {"napari_pclesr": ""}
    torch.jit.load(str(report.path), _extra_files=extra)
    assert json.loads(extra["napari_pclesr"])["origin"] == "pretrained:fsrcnn"


# -- ONNX ---------------------------------------------------------------------------------------


@needs_onnx
@pytest.mark.parametrize(
    ("name", "scale"), [*((name, 1) for name in models.available()), ("fsrcnn", 2)]
)
def test_onnx_round_trip_with_onnxruntime(tmp_path, name, scale):
    import onnx
    import onnxruntime

    network = tiny_network(name, scale)
    checkpoint = write_checkpoint(network, tmp_path / "best.pt")
    report = export_onnx(checkpoint, tmp_path / "model.onnx")
    assert 0 <= report.max_abs_difference <= TOLERANCE

    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["lr"]
    batch = new_batch()
    exported = session.run(None, {"lr": batch.numpy()})[0]
    assert exported.shape == (3, 1, 23 * scale, 31 * scale)
    np.testing.assert_allclose(exported, pytorch_output(network, batch), rtol=0, atol=TOLERANCE)
    properties = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    assert json.loads(properties["napari_pclesr"])["model"] == name


# -- missing extra ------------------------------------------------------------------------------


def test_missing_extra_names_the_pip_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now fails
    checkpoint = write_checkpoint(tiny_network("fsrcnn"), tmp_path / "best.pt")
    with pytest.raises(MissingExtraError, match=r'onnxruntime.*pip install "napari-pclesr\[export'):
        export_onnx(checkpoint, tmp_path / "model.onnx")
    status = main(["export", str(checkpoint), str(tmp_path / "m.zip"), "--format", "bioimageio"])
    assert status == 2
    assert 'pip install "napari-pclesr[export]"' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_package_and_cli_import_without_the_extra(tmp_path):
    blocked = ["onnx", "onnxruntime", "onnxscript", "bioimageio"]
    script = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import napari_pclesr, napari_pclesr.export\n"
        "from napari_pclesr.cli import main\n"
        "try:\n    main(['export', '--help'])\nexcept SystemExit as exit:\n"
        "    assert exit.code == 0\n"
        f"status = main(['export', 'x.pt', {str(tmp_path / 'm.onnx')!r}, '--format', 'onnx'])\n"
        "assert status == 2, status\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--format {torchscript,onnx,bioimageio}" in result.stdout
    assert "ONNX export needs onnx, onnxscript, onnxruntime" in result.stderr


# -- bioimage.io --------------------------------------------------------------------------------


def reference_output(network, frame) -> np.ndarray:
    """Our normalisation of the whole frame (the spec has no FoV mask), then the network."""
    whole_frame = Normalisation(percentiles=NORMALISATION.percentiles, fill_outside=False)
    normalised, _, _ = whole_frame.normalise(frame)
    return pytorch_output(network, torch.from_numpy(normalised)[None, None])


def predict_with_bioimageio(package, frame, weight_format) -> np.ndarray:
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict

    description = load_model_description(package)
    pipeline = create_prediction_pipeline(description, weight_format=weight_format)
    sample = predict(model=pipeline, inputs=frame[None, None].astype(np.float32))
    return np.asarray(sample.members["sr"].data)


@needs_bioimageio
@pytest.mark.parametrize("name", models.available())
def test_bioimageio_package_validates_and_predicts_like_pytorch(tmp_path, name, no_network):
    from bioimageio.spec import load_model_description

    scale = 2 if name == "edsr" else 1
    network = tiny_network(name, scale)
    checkpoint = write_checkpoint(network, tmp_path / "best.pt")
    frame = _test_frame(scale, side=40, seed=1) * 900 + 50  # camera-like units
    numpy_state = np.random.get_state()  # noqa: NPY002
    # ONNX weights in one package only: the exporter is slow, and ONNX is checked above.
    formats = ("pytorch_state_dict", "torchscript", "onnx")[: 3 if name == "fsrcnn" else 2]
    report = export_bioimageio(
        checkpoint, tmp_path / "model.zip", test_frame=frame, weight_formats=formats
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "model.zip"]
    assert set(report.differences) == set(formats) - {"pytorch_state_dict"}
    assert report.max_abs_difference <= TOLERANCE and report.notes
    # test_model reseeds NumPy's global generator; the export gives it back.
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()  # noqa: NPY002

    description = load_model_description(report.path)
    assert description.format_version.startswith("0.5")
    assert {w for w, entry in description.weights if entry is not None} == set(formats)
    (scale_range,) = [p for p in description.inputs[0].preprocessing if p.id == "scale_range"]
    assert list(scale_range.kwargs.axes) == ["y", "x"]  # per frame, each sample of a batch alone
    percentiles = (scale_range.kwargs.min_percentile, scale_range.kwargs.max_percentile)
    assert percentiles == NORMALISATION.percentiles
    dois = {str(entry.doi) for entry in description.cite}
    assert "10.1007/s11548-018-1764-0" in dois  # seed 000
    assert ("10.1007/978-3-030-00928-1_7" in dois) == (name == "densenet_sr")  # seed 002
    with zipfile.ZipFile(report.path) as package:
        names = set(package.namelist())
        readme = package.read("README.md").decode()
    assert {"rdf.yaml", "weights.pt", "test_input.npy", "test_output.npy", "cover.png"} <= names
    assert "## Validation" in readme and "Limits" in readme
    np.testing.assert_allclose(
        _extract(report.path, "test_output.npy"),
        reference_output(network, frame),
        rtol=0,
        atol=TOLERANCE,
    )

    # A frame the package never saw, through bioimage.io's own pre-processing and each weight
    # format, agrees with our normalisation and network. bioimage.io pads the frame by the
    # halo (mirroring) where the network pads with zeros, so the rim of one halo differs. It
    # also takes the percentiles over the padded tile; with 5 % of the pixels at each extreme,
    # both percentiles are those extremes whatever the padding, so the ranges agree exactly.
    unseen = _test_frame(scale, side=36, seed=2) * 300
    extremes = np.random.default_rng(3).random(unseen.shape)
    unseen[extremes < 0.05], unseen[extremes > 0.95] = unseen.min(), unseen.max()
    expected = reference_output(network, unseen)
    inside = (..., slice(HALO * scale, -HALO * scale), slice(HALO * scale, -HALO * scale))
    for weight_format in formats:
        predicted = predict_with_bioimageio(report.path, unseen, weight_format)
        assert predicted.shape == expected.shape == (1, 1, 36 * scale, 36 * scale)
        np.testing.assert_allclose(predicted[inside], expected[inside], rtol=0, atol=TOLERANCE)


def _extract(package, member):
    with zipfile.ZipFile(package) as archive, archive.open(member) as handle:
        return np.load(handle)


@needs_bioimageio
def test_validation_gives_back_the_global_random_state_and_settings():
    from napari_pclesr.export._bioimageio import _global_state_restored

    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        expected_torch, expected_numpy = torch.rand(3), np.random.rand(3)  # noqa: NPY002
        torch.manual_seed(123)
        np.random.seed(123)  # noqa: NPY002
        with _global_state_restored():  # what bioimageio.core's test_model does inside:
            torch.manual_seed(0)
            np.random.seed(0)  # noqa: NPY002
            torch.use_deterministic_algorithms(False)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.equal(torch.rand(3), expected_torch)
        assert np.array_equal(np.random.rand(3), expected_numpy)  # noqa: NPY002
    finally:
        torch.use_deterministic_algorithms(False)


@needs_bioimageio
def test_a_package_whose_processing_disagrees_with_ours_is_not_written(tmp_path, monkeypatch):
    from bioimageio.spec.model.v0_5 import AxisId, ScaleRangeDescr, ScaleRangeKwargs

    def percentile_range(normalisation):
        # Other percentiles than the checkpoint's: the package's test output, computed with
        # our own normalisation, cannot be reproduced.
        kwargs = ScaleRangeKwargs(
            axes=(AxisId("y"), AxisId("x")), min_percentile=10.0, max_percentile=90.0
        )
        return [ScaleRangeDescr(kwargs=kwargs)], []

    monkeypatch.setattr("napari_pclesr.export.bioimageio_processing", percentile_range)
    frame = _test_frame(1, side=40, seed=1)
    with pytest.raises(ExportError, match=r"failed bioimageio\.core's test_model"):
        export_bioimageio(
            tiny_network("fsrcnn"),
            tmp_path / "model.zip",
            test_frame=frame,
            weight_formats=["pytorch_state_dict"],
        )
    assert not list(tmp_path.iterdir())


@needs_bioimageio
def test_bioimageio_refusals(tmp_path):
    network = tiny_network("fsrcnn")
    with pytest.raises(ValueError, match=r"a bioimage.io package is a \.zip file"):
        export_bioimageio(network, tmp_path / "model.onnx")
    with pytest.raises(ValueError, match=r"unknown bioimage\.io weight format"):
        export_bioimageio(network, tmp_path / "model.zip", weight_formats=["keras"])
    with pytest.raises(ValueError, match="registry name"):
        export_bioimageio(NoisyNetwork(), tmp_path / "model.zip")
    with pytest.raises(ValueError, match="not an SPDX licence identifier"):
        export_bioimageio(
            network,
            tmp_path / "model.zip",
            license="my licence",
            weight_formats=["pytorch_state_dict"],
            test_frame=_test_frame(1, side=40),
        )
    assert not list(tmp_path.iterdir())


# -- command line -------------------------------------------------------------------------------


def test_cli_exports_and_reports_the_difference(tmp_path, capsys):
    checkpoint = write_checkpoint(tiny_network("edsr"), tmp_path / "best.pt")
    out = tmp_path / "model.pt"
    assert main(["export", str(checkpoint), str(out), "--format", "torchscript"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (torchscript)" in printed
    assert "largest difference from PyTorch: torchscript" in printed
    assert torch.jit.load(str(out)) is not None


@needs_bioimageio
def test_cli_writes_a_bioimageio_package_from_a_test_image(tmp_path, capsys, no_network):
    import tifffile
    from bioimageio.spec import load_model_description

    checkpoint = write_checkpoint(tiny_network("fsrcnn"), tmp_path / "best.pt")
    frames = np.stack([_test_frame(1, side=40, seed=s) * 1000 for s in (3, 4)])
    tifffile.imwrite(tmp_path / "recording.tif", frames.astype(np.float32))
    out = tmp_path / "model.zip"
    arguments = ["export", str(checkpoint), str(out), "--format", "bioimageio"]
    arguments += [
        "--weights",
        "pytorch_state_dict",
        "--test-image",
        str(tmp_path / "recording.tif"),
    ]
    arguments += ["--author", "Ada Lovelace", "--author", "Alan Turing", "--name", "pCLE FSRCNN"]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "passed bioimageio.core test_model" in printed and "field of view" in printed
    description = load_model_description(out)
    assert description.name == "pCLE FSRCNN"
    assert [a.name for a in description.authors] == ["Ada Lovelace", "Alan Turing"]
    assert str(description.license) == "BSD-3-Clause"
    np.testing.assert_array_equal(_extract(out, "test_input.npy")[0, 0], frames[0])


def test_cli_errors_exit_2_without_traceback(tmp_path, capsys):
    checkpoint = write_checkpoint(tiny_network("fsrcnn"), tmp_path / "best.pt")
    out = tmp_path / "model.pt"
    out.write_bytes(b"earlier")
    cases = [
        ([str(checkpoint), str(out)], "already exists; choose another output path or pass"),
        ([str(checkpoint), str(checkpoint), "--overwrite"], "it is the input"),
        ([str(tmp_path / "nope.pt"), str(tmp_path / "x.pt")], "does not exist"),
        ([str(checkpoint), str(tmp_path / "x.pt"), "--tolerance", "-1"], "--tolerance"),
    ]
    for arguments, message in cases:
        assert main(["export", *arguments, "--format", "torchscript"]) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error
    assert out.read_bytes() == b"earlier"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(checkpoint), str(tmp_path / "x.pt"), "--format", "tflite"])
    assert exit_info.value.code == 2
