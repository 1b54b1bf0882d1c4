"""The bioimage.io model package: its files, its description (spec 0.5) and its validation.

Only :mod:`napari_pclesr.export` uses this module; it imports ``bioimageio`` at the top, so it
is imported only when the ``[export]`` extra is installed.
"""

from __future__ import annotations

import contextlib
import gc
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from bioimageio.spec.model.v0_5 import (
    ArchitectureFromLibraryDescr,
    Author,
    AxisId,
    BatchAxis,
    BioimageioConfig,
    ChannelAxis,
    CiteEntry,
    Config,
    Doi,
    FileDescr,
    Identifier,
    InputTensorDescr,
    IntervalOrRatioDataDescr,
    LicenseId,
    ModelDescr,
    OnnxWeightsDescr,
    OutputTensorDescr,
    ParameterizedSize,
    PytorchStateDictWeightsDescr,
    SizeReference,
    SpaceInputAxis,
    SpaceOutputAxisWithHalo,
    TensorId,
    TorchscriptWeightsDescr,
    Version,
    WeightsDescr,
)

from napari_pclesr._validation import as_grey_float

#: What the package cannot express, for the report and the package's README.
LIMITS = (
    "The input range is taken over the whole frame, corners outside the circular field of "
    "view included, not over the field of view as napari-pclesr does: the spec's scale_range "
    "takes no mask. On pCLE frames, whose corners are 0, the low percentile is lower than "
    "napari-pclesr's.",
    "napari-pclesr gives the pixels outside the field of view the value of the nearest pixel "
    "inside it before the network sees them; the spec has no such step, so the network meets "
    "the dark edge of the field of view there.",
    "The output stays in the normalised units ([0, 1] for the input's range): the spec has no "
    "post-processing that maps a tensor back with another tensor's per-frame range, which "
    "napari-pclesr does to return the input's intensity units.",
    "Pixels outside the field of view are not set to 0 in the output.",
)

_INPUT = TensorId("lr")
_OUTPUT = TensorId("sr")
_TAGS = ("super-resolution", "pcle", "endomicroscopy", "fibre-bundle", "2d", "pytorch")


@dataclass
class PackageFiles:
    """The files of a package, in a working folder."""

    folder: Path
    onnx_opset: int | None = None

    def __post_init__(self):
        self.state_dict = self.folder / "weights.pt"
        self.torchscript = self.folder / "weights_torchscript.pt"
        self.onnx = self.folder / "weights.onnx"
        self.test_input = self.folder / "test_input.npy"
        self.test_output = self.folder / "test_output.npy"
        self.cover = self.folder / "cover.png"
        self.documentation = self.folder / "README.md"
        self.environment = self.folder / "environment.yaml"


def write_test_files(files: PackageFiles, frame, output: np.ndarray) -> None:
    """Save the test input (raw frame) and output (1, 1, ·, ·) and a cover: input | output."""
    import imageio.v3 as iio

    from napari_pclesr.export import _MIN_SIDE

    frame = as_grey_float(frame, name="test frame")
    if frame.ndim != 2 or min(frame.shape) < _MIN_SIDE:
        raise ValueError(
            f"the test frame must be one grey frame of at least {_MIN_SIDE}x{_MIN_SIDE} pixels, "
            f"got shape {frame.shape}."
        )
    np.save(files.test_input, frame[None, None].astype(np.float32))
    np.save(files.test_output, output.astype(np.float32))
    scale = output.shape[-1] // frame.shape[-1]
    enlarged = np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)
    side_by_side = np.concatenate([_to_uint8(enlarged), _to_uint8(output[0, 0])], axis=1)
    iio.imwrite(files.cover, side_by_side)


def describe(
    source,
    files: PackageFiles,
    *,
    name: str,
    authors: Sequence[str],
    license: str,
    citations: Sequence[tuple[str, str]],
    processing: tuple[list, list],
    differences: dict[str, float],
    tolerance: float,
) -> ModelDescr:
    """The bioimage.io description of an exported network (files already written)."""
    _write_environment(files.environment)
    files.documentation.write_text(
        _documentation(source, name, differences, tolerance), encoding="utf-8"
    )
    preprocessing, postprocessing = processing
    return ModelDescr(
        name=name,
        description=(
            f"{source.arch} super-resolution (x{source.scale}) of probe-based confocal laser "
            "endomicroscopy (pCLE) frames, trained with napari-pclesr."
        ),
        authors=[Author(name=author) for author in authors],
        cite=[CiteEntry(text=text, doi=Doi(doi)) for text, doi in citations],
        license=LicenseId(license),
        documentation=FileDescr(source=files.documentation),
        covers=[FileDescr(source=files.cover)],
        tags=[*_TAGS, source.arch.replace("_", "-")],
        inputs=[_input_descr(files, preprocessing)],
        outputs=[_output_descr(files, source.scale, postprocessing)],
        weights=_weights_descr(source, files),
        config=Config(bioimageio=BioimageioConfig(architecture_type=source.arch)),
    )


def check_metadata(name: str, authors: Sequence[str], license: str) -> None:
    """Refuse, before any work, a name, author list or licence the spec would reject."""
    allowed = set(string.ascii_letters + string.digits + "_+- ()")
    if not 5 <= len(name) <= 128 or not set(name) <= allowed:
        raise ValueError(
            f"the model name {name!r} must be 5 to 128 letters, digits, spaces or _+-() "
            "(a bioimage.io rule)."
        )
    if not authors or not all(str(author).strip() for author in authors):
        raise ValueError("give at least one author of the model, each with a name.")
    try:
        LicenseId(license)
    except ValueError:
        raise ValueError(
            f"{license!r} is not an SPDX licence identifier (for example BSD-3-Clause, MIT, "
            "CC-BY-4.0)."
        ) from None


def save_and_test(description: ModelDescr, path: Path) -> None:
    """Write the package to ``path`` and run ``bioimageio.core.test_model`` on the written zip.

    Raises
    ------
    ExportError
        Listing the failed checks, if the package does not pass.
    """
    from bioimageio.core import test_model
    from bioimageio.spec import save_bioimageio_package

    from napari_pclesr.export import ExportError

    with _quiet_bioimageio(), _global_state_restored():
        save_bioimageio_package(description, output_path=path)
        summary = test_model(path)
    if summary.status != "passed":
        failures = [
            f"{detail.name}: {error.msg.strip().splitlines()[0] if error.msg.strip() else '?'}"
            for detail in summary.details
            if detail.status == "failed"
            for error in detail.errors or [_no_message()]
        ]
        raise ExportError(
            "the bioimage.io package failed bioimageio.core's test_model, so it was not "
            f"written: {'; '.join(failures[:5]).rstrip('. ') or summary.status}."
        )


# -- parts of the description -------------------------------------------------------------------


def _input_descr(files: PackageFiles, preprocessing: list) -> InputTensorDescr:
    from napari_pclesr.export import _MIN_SIDE

    size = ParameterizedSize(min=_MIN_SIDE, step=1)
    return InputTensorDescr(
        id=_INPUT,
        description="one grey pCLE frame, in any intensity units",
        axes=[
            BatchAxis(),
            ChannelAxis(channel_names=[Identifier("grey")]),
            SpaceInputAxis(id=AxisId("y"), size=size),
            SpaceInputAxis(id=AxisId("x"), size=size),
        ],
        test_tensor=FileDescr(source=files.test_input),
        data=IntervalOrRatioDataDescr(type="float32"),
        preprocessing=preprocessing,
    )


def _output_descr(files: PackageFiles, scale: int, postprocessing: list) -> OutputTensorDescr:
    from napari_pclesr.export import _HALO

    def space(axis: str) -> SpaceOutputAxisWithHalo:
        return SpaceOutputAxisWithHalo(
            id=AxisId(axis),
            size=SizeReference(tensor_id=_INPUT, axis_id=AxisId(axis)),
            scale=1.0 / scale,
            halo=_HALO * scale,
        )

    return OutputTensorDescr(
        id=_OUTPUT,
        description=f"the super-resolved frame ({scale}x), in the normalised units",
        axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("grey")]), space("y"), space("x")],
        test_tensor=FileDescr(source=files.test_output),
        data=IntervalOrRatioDataDescr(type="float32"),
        postprocessing=postprocessing,
    )


def _weights_descr(source, files: PackageFiles) -> WeightsDescr:
    torch_version = Version(torch.__version__.split("+")[0])
    weights = {
        "pytorch_state_dict": PytorchStateDictWeightsDescr(
            source=files.state_dict,
            architecture=ArchitectureFromLibraryDescr(
                callable=Identifier("create"),
                import_from="napari_pclesr.models",
                kwargs={"name": source.arch, **source.hparams},
            ),
            pytorch_version=torch_version,
            dependencies=FileDescr(source=files.environment),
        )
    }
    if files.torchscript.exists():
        weights["torchscript"] = TorchscriptWeightsDescr(
            source=files.torchscript,
            pytorch_version=torch_version,
            parent="pytorch_state_dict",
            comment="traced with torch.jit.trace",
        )
    if files.onnx.exists():
        weights["onnx"] = OnnxWeightsDescr(
            source=files.onnx,
            opset_version=files.onnx_opset,
            parent="pytorch_state_dict",
            comment="torch.onnx.export(dynamo=True) of napari_pclesr.export.portable_network",
        )
    return WeightsDescr(**weights)


def _write_environment(path: Path) -> None:
    # The state-dict weights are rebuilt by napari_pclesr.models.create.
    path.write_text(
        "name: napari-pclesr\n"
        "channels:\n  - conda-forge\n  - nodefaults\n"
        "dependencies:\n  - python>=3.10\n  - pytorch>=2.1\n  - pip\n"
        "  - pip:\n      - napari-pclesr\n",
        encoding="utf-8",
    )


def _documentation(source, name: str, differences: dict[str, float], tolerance: float) -> str:
    from napari_pclesr import __version__

    config = source.training.get("config") or {}
    if config:
        training = (
            f"{source.training.get('iteration', '?')} iterations of {config.get('loss', '?')} "
            f"loss, batch {config.get('batch_size', '?')}, learning rate "
            f"{config.get('lr', '?')}, {config.get('patch_size', '?')}-pixel patches, data "
            f"`{config.get('data', '?')}` (LR simulated through a fibre bundle unless the data "
            "folder held recorded LR)."
        )
    else:
        training = "Not recorded in the exported file."
    checks = ", ".join(f"{fmt} {value:.2g}" for fmt, value in differences.items()) or "none"
    hparams = ", ".join(f"{key}={value}" for key, value in source.hparams.items())
    limits = "\n".join(f"- {limit}" for limit in LIMITS)
    low, high = source.normalisation.percentiles
    return f"""# {name}

Super-resolution of probe-based confocal laser endomicroscopy (pCLE) frames by the
`{source.arch}` network of [napari-pclesr](https://pypi.org/project/napari-pclesr/)
({hparams}), exported by napari-pclesr {__version__} from {source.origin}.

## Input and output

- Input `lr`: one grey frame (batch, channel 1, y, x) of at least 32 × 32 pixels, in any
  intensity units; pCLE frames are 0 outside the circular field of view.
- Pre-processing: `scale_range` over y and x with percentiles {low:g} and {high:g}
  (napari-pclesr's per-frame normalisation, which takes them inside the field of view only).
- Output `sr`: the super-resolved frame, {source.scale}× larger, in the same normalised units.

## Training

{training}

## Limits

What bioimage.io processing cannot express, where napari-pclesr (`pclesr infer`) differs:

{limits}

The network was trained on simulated fibre-bundle images; frames from another probe, another
magnification or another noise level than the training data may be degraded rather than
improved. Check on your own data.

## Validation

The package's test input is a phantom seen through a simulated fibre bundle (or a frame the
exporter chose), and its test output is the PyTorch network's output. The TorchScript and ONNX
weights were checked against PyTorch on frames of two sizes; largest absolute differences:
{checks} (tolerance {tolerance:g}). To validate the model quantitatively, super-resolve frames
of held-out sequences with known high-resolution references (for example simulated from
mosaics) and compare SSIM and PSNR against the low-resolution input and simple baselines
(`pclesr metrics`).
"""


# -- helpers ------------------------------------------------------------------------------------


def _to_uint8(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (0.5, 99.5))
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def _no_message():
    from bioimageio.spec.summary import ErrorEntry

    return ErrorEntry(loc=(), msg="", type="failed")


@contextlib.contextmanager
def _quiet_bioimageio() -> Iterator[None]:
    """Keep bioimageio's log lines (it logs every check) off the console during an export."""
    from loguru import logger

    logger.disable("bioimageio")
    try:
        yield
    finally:
        logger.enable("bioimageio")


@contextlib.contextmanager
def _global_state_restored() -> Iterator[None]:
    """``test_model`` reseeds torch and NumPy and switches deterministic algorithms off; give
    the caller's process its random states and settings back.

    It also runs a full garbage collection after each of its many predictions, which takes
    seconds in a process holding many objects (torch, napari); the objects that exist before
    the test are frozen, so that the collections only visit what the test creates.
    """
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()  # noqa: NPY002 (test_model seeds the legacy state)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        torch.random.set_rng_state(torch_state)
        np.random.set_state(numpy_state)  # noqa: NPY002
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
