"""Export a trained network to TorchScript, ONNX or a bioimage.io model package.

>>> from napari_pclesr.export import export  # doctest: +SKIP
>>> report = export("run/best.pt", "onnx", "fsrcnn.onnx")
>>> report.max_abs_difference  # ONNX Runtime against PyTorch, on frames of two sizes
3.4e-08

Every export is checked before it is kept: the written file is loaded back with its own runtime
(``torch.jit.load``, ONNX Runtime, ``bioimageio.core``) and run on frames of two sizes and batch
sizes (so the dynamic batch, height and width axes are exercised), and its output is compared with
the PyTorch network's. A difference above the tolerance (1e-4 by default, on outputs in the
normalised [0, 1] range) raises :class:`ExportError` and nothing is written. Files are written
under a temporary name and renamed at the end, so an interrupted export leaves nothing behind.

What each format holds
----------------------
TorchScript and ONNX files hold the network alone: it maps normalised frames ``(B, 1, H, W)``
float32 to ``(B, 1, s·H, s·W)``. The caller normalises the input and maps the output back, as
:func:`napari_pclesr.infer.super_resolve` does; the file carries a JSON description of the model
and of its normalisation (TorchScript: extra file ``napari_pclesr.json``; ONNX: metadata entry
``napari_pclesr``). TorchScript keeps the layer forms PyTorch runs fastest; ONNX gets the
textbook forms of FSRCNN's last layer and DenseNet-SR's dense blocks (:func:`portable_network`,
the same weights), which exporters and runtimes handle well.

A bioimage.io package (spec 0.5, a ``.zip``) holds the weights as a PyTorch state dict (built by
``napari_pclesr.models.create``), TorchScript and ONNX, a test input (a phantom seen through the
simulated fibre bundle) with the expected output, the normalisation as pre-processing as far as
the spec can express it (:func:`bioimageio_processing`), a cover, a README and the citations. It
must pass ``bioimageio.core.test_model`` before it is written.

The ONNX and bioimage.io formats need the optional extra: ``pip install "napari-pclesr[export]"``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_pclesr._atomic import atomic_path
from napari_pclesr.data.patches import Normalisation
from napari_pclesr.train.checkpoint import _first_line

__all__ = [
    "BIOIMAGEIO_WEIGHT_FORMATS",
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "ExportError",
    "ExportReport",
    "ExportSource",
    "MissingExtraError",
    "bioimageio_processing",
    "export",
    "export_bioimageio",
    "export_onnx",
    "export_torchscript",
    "load_source",
    "portable_network",
]

#: The formats :func:`export` writes.
FORMATS = ("torchscript", "onnx", "bioimageio")
#: Largest accepted absolute difference between an export's output and PyTorch's.
DEFAULT_TOLERANCE = 1e-4
#: Weight formats put in a bioimage.io package by default (the first one is the original).
BIOIMAGEIO_WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
#: What to run when the optional packages are missing.
INSTALL_HINT = 'pip install "napari-pclesr[export]"'

_PRETRAINED_PREFIX = "pretrained:"
#: ONNX operator set: 18 runs on ONNX Runtime 1.14 (2023) and later.
_ONNX_OPSET = 18
#: Name of the JSON description inside TorchScript and ONNX files.
_METADATA_KEY = "napari_pclesr"
#: Check batches: the first is also the example the network is traced or exported with (batch
#: 2, so that the batch axis cannot be specialised to 1); the second has another batch size and
#: odd, non-square sides, so a trace or export that froze a shape fails the check.
_CHECK_SHAPES = ((2, 1, 32, 40), (1, 1, 27, 45))
#: Side of the bioimage.io test frame (LR pixels) when none is given.
_TEST_FRAME_SIDE = 128
#: bioimage.io input size: at least _MIN_SIDE pixels beyond twice the halo (the receptive-field
#: radius, cropped from each side of a tile when a consumer tiles a large frame); _HALO when
#: the radius cannot be derived from the layers.
_MIN_SIDE = 32
_HALO = 8

_CITATIONS = {
    "supervised pCLE SR": (
        "Ravì D., Szczotka A. B., Shakir D. I., Pereira S. P., Vercauteren T. Effective deep "
        "learning training for single-image super-resolution in endomicroscopy exploiting "
        "video-registration-based reconstruction. IJCARS 13(6), 2018.",
        "10.1007/s11548-018-1764-0",
    ),
    "densenet_sr": (
        "Izadi S., Moriarty K. P., Hamarneh G. Can deep learning relax endomicroscopy hardware "
        "miniaturization requirements? MICCAI 2018.",
        "10.1007/978-3-030-00928-1_7",
    ),
    "fsrcnn": (
        "Dong C., Loy C. C., Tang X. Accelerating the super-resolution convolutional neural "
        "network. ECCV 2016.",
        "10.48550/arXiv.1608.00367",
    ),
    "edsr": (
        "Lim B., Son S., Kim H., Nah S., Lee K. M. Enhanced deep residual networks for single "
        "image super-resolution. CVPR workshops 2017.",
        "10.48550/arXiv.1707.02921",
    ),
}
_CITATIONS["edsr_large"] = _CITATIONS["edsr"]


class MissingExtraError(ImportError):
    """A format needs packages of the optional ``[export]`` extra that are not installed."""


class ExportError(ValueError):
    """An export does not reproduce the network, or its package does not validate."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely it reproduces the PyTorch network.

    Attributes
    ----------
    format : str
        One of :data:`FORMATS`.
    path : pathlib.Path
        The file written.
    differences : dict of str to float
        Largest absolute difference from the PyTorch network's output, per runtime checked
        (``"torchscript"``, ``"onnx"``; a bioimage.io package lists those of its weights).
    tolerance : float
        The largest difference that was accepted.
    notes : tuple of str
        What the export could not express (bioimage.io), for the user to read.
    """

    format: str
    path: Path
    differences: dict[str, float]
    tolerance: float
    notes: tuple[str, ...] = ()

    @property
    def max_abs_difference(self) -> float:
        """The largest difference over every runtime checked (0 when none was converted)."""
        return max(self.differences.values(), default=0.0)


@dataclass(frozen=True)
class ExportSource:
    """A network to export, with what is known about it.

    Attributes
    ----------
    network : torch.nn.Module
        In eval mode, on the CPU, as loaded (the reference every export is checked against).
    normalisation : Normalisation
        The statistics the network was trained with.
    arch : str or None
        Registry name (``napari_pclesr.models.available()``); None for a custom module.
    hparams : dict
        Every hyper-parameter, the scale included (``network.hparams``).
    scale : int
        Upscaling factor.
    origin : str
        Where it came from: a file path, a ``pretrained:`` name or "a module".
    training : dict
        The checkpoint's ``iteration`` and ``config`` (empty when unknown).
    """

    network: nn.Module
    normalisation: Normalisation
    arch: str | None
    hparams: dict
    scale: int
    origin: str
    training: dict = field(default_factory=dict)

    @property
    def halo(self) -> int:
        """LR pixels a tile must overlap its neighbours by per side for an exact result: the
        network's receptive-field radius as tiled inference takes it (``_HALO`` when it is
        unknown)."""
        from napari_pclesr.infer import _receptive_field

        radius, _ = _receptive_field(self.network)
        return _HALO if radius is None else max(1, radius)

    @property
    def min_side(self) -> int:
        """The smallest input side a bioimage.io consumer may feed (twice the halo and more)."""
        return 2 * self.halo + _MIN_SIDE

    def metadata(self) -> dict:
        """The JSON-friendly description stored inside TorchScript and ONNX files."""
        from napari_pclesr import __version__

        return {
            "format": "napari-pclesr-export",
            "package_version": __version__,
            "model": self.arch,
            "hparams": self.hparams,
            "scale": self.scale,
            "origin": self.origin,
            "input": "(B, 1, H, W) float32 frames, normalised as napari_pclesr.infer does",
            "output": f"(B, 1, {self.scale}·H, {self.scale}·W), in the normalised units",
            "normalisation": self.normalisation.to_dict(),
        }


# -- loading ------------------------------------------------------------------------------------


def load_source(source) -> ExportSource:
    """Load what to export: a checkpoint file or dict, a ``pretrained:NAME`` or a module.

    Parameters
    ----------
    source : str, os.PathLike, dict or torch.nn.Module
        A checkpoint written by ``pclesr train`` (``best.pt``), a loaded checkpoint dict, a
        ``pretrained:NAME`` that :func:`napari_pclesr.infer.resolve_model` knows, or a network
        (exported with the identity normalisation).

    Returns
    -------
    ExportSource

    Raises
    ------
    FileNotFoundError, CheckpointError
        For a missing or unusable checkpoint.
    ValueError
        For anything else.
    """
    from napari_pclesr.train.checkpoint import load_checkpoint, load_model, validate_checkpoint

    training: dict = {}
    if isinstance(source, nn.Module):
        # A copy: the caller's module stays where it is, in the mode it is in.
        network, normalisation, origin = copy.deepcopy(source), Normalisation(), "a module"
    elif isinstance(source, str) and source.startswith(_PRETRAINED_PREFIX):
        from napari_pclesr.infer import resolve_model

        network, normalisation = resolve_model(source, "cpu")
        origin = source
    elif isinstance(source, dict | str | os.PathLike):
        if isinstance(source, dict):
            payload = validate_checkpoint(source)
        else:
            payload = load_checkpoint(source)
        network, normalisation = load_model(payload, "cpu")
        origin = "a checkpoint dict" if isinstance(source, dict) else str(source)
        training = {key: payload[key] for key in ("iteration", "config") if key in payload}
    else:
        raise ValueError(
            "give a checkpoint file or dict, a 'pretrained:NAME' or a torch.nn.Module to export, "
            f"got {type(source).__name__}."
        )
    network = network.cpu().float().eval()
    hparams = dict(getattr(network, "hparams", {}))
    scale = int(getattr(network, "scale", hparams.get("scale", 1)))
    hparams.setdefault("scale", scale)
    return ExportSource(
        network=network,
        normalisation=normalisation,
        arch=getattr(network, "arch", None),
        hparams=hparams,
        scale=scale,
        origin=origin,
        training=training,
    )


def portable_network(network: nn.Module) -> nn.Module:
    """A copy of ``network`` in the form ONNX exporters and runtimes handle: eval mode, CPU,
    float32, no gradients, the same weights, and the textbook form of two layers that run
    faster in PyTorch in another form.

    - FSRCNN's last layer (:class:`~napari_pclesr.models.fsrcnn.Deconvolution`) as one plain
      convolution, instead of the sum of row convolutions;
    - DenseNet-SR's dense blocks (:class:`~napari_pclesr.models.densenet_sr.DenseBlock`) with
      concatenation, as the paper writes them, instead of in-place accumulation, which the
      exporter unrolls into about 19,000 ONNX nodes for the default network.
    """
    from napari_pclesr.models.densenet_sr import DenseBlock
    from napari_pclesr.models.fsrcnn import Deconvolution

    portable = _frozen_copy(network)
    for parent in list(portable.modules()):
        for name, child in parent.named_children():
            if isinstance(child, Deconvolution):
                child.formulation = "conv2d"
            elif isinstance(child, DenseBlock):
                setattr(parent, name, _ConcatenatingDenseBlock(child))
    return portable


class _ConcatenatingDenseBlock(nn.Module):
    """A :class:`~napari_pclesr.models.densenet_sr.DenseBlock` computed by concatenation: each
    layer sees ``[x, L_1, ..., L_{i-1}]`` and the block returns ``[L_1, ..., L_m]``."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.layers = block.layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.layers:
            features.append(torch.relu(conv(torch.cat(features, dim=1))))
        return torch.cat(features[1:], dim=1)


def _frozen_copy(network: nn.Module) -> nn.Module:
    """A copy in eval mode, on the CPU, in float32 and without gradients."""
    frozen = copy.deepcopy(network).cpu().float().eval()
    frozen.requires_grad_(False)
    return frozen


# -- public exports -----------------------------------------------------------------------------


def export(checkpoint, format: str, path, **options) -> ExportReport:
    """Export ``checkpoint`` in ``format`` (one of :data:`FORMATS`) to ``path``.

    ``options`` go to :func:`export_torchscript`, :func:`export_onnx` or
    :func:`export_bioimageio`.
    """
    exporters = {
        "torchscript": export_torchscript,
        "onnx": export_onnx,
        "bioimageio": export_bioimageio,
    }
    if format not in exporters:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}.")
    return exporters[format](checkpoint, path, **options)


def export_torchscript(
    checkpoint, path, *, overwrite: bool = False, tolerance: float = DEFAULT_TOLERANCE
) -> ExportReport:
    """Write the network as a TorchScript file and check it against PyTorch.

    Parameters
    ----------
    checkpoint : str, os.PathLike, dict or torch.nn.Module
        See :func:`load_source`.
    path : str or os.PathLike
        The file to write (e.g. ``model.pt``); it loads with ``torch.jit.load(path)``.
    overwrite : bool
        Replace an existing file (never the checkpoint itself).
    tolerance : float
        Largest accepted absolute difference from the PyTorch output.

    Returns
    -------
    ExportReport

    Raises
    ------
    ExportError
        If the TorchScript output differs from PyTorch's by more than ``tolerance``.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.

    Notes
    -----
    The network is traced (``torch.jit.trace``): PyTorch keeps TorchScript in maintenance
    mode, and tracing is the one way that accepts every registered network. The trace is run
    on frames of another batch size and shape than it was traced with, so a trace that froze a
    shape is caught.
    """
    target = _prepare_target(path, checkpoint, overwrite)
    source = load_source(checkpoint)
    with atomic_path(target) as temporary:
        difference = _write_checked_torchscript(source, temporary, tolerance)
    return ExportReport("torchscript", target, {"torchscript": difference}, tolerance)


def export_onnx(
    checkpoint, path, *, overwrite: bool = False, tolerance: float = DEFAULT_TOLERANCE
) -> ExportReport:
    """Write the network as an ONNX file and check it with ONNX Runtime.

    The graph has dynamic batch, height and width axes; its input is named ``lr`` and its
    output ``sr``. Parameters, returns and errors are those of :func:`export_torchscript`, and
    :class:`MissingExtraError` if ``onnx``, ``onnxscript`` or ``onnxruntime`` is missing.
    """
    _require("onnx", "onnxscript", "onnxruntime", purpose="ONNX export")
    target = _prepare_target(path, checkpoint, overwrite)
    source = load_source(checkpoint)
    with atomic_path(target) as temporary:
        difference, _ = _write_checked_onnx(source, temporary, tolerance)
    return ExportReport("onnx", target, {"onnx": difference}, tolerance)


def export_bioimageio(
    checkpoint,
    path,
    *,
    overwrite: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    name: str | None = None,
    authors: Sequence[str] = ("napari-pclesr developers",),
    license: str = "BSD-3-Clause",
    weight_formats: Sequence[str] = BIOIMAGEIO_WEIGHT_FORMATS,
    test_frame=None,
) -> ExportReport:
    """Write a bioimage.io model package (spec 0.5, a ``.zip``) and validate it.

    Parameters
    ----------
    checkpoint : str, os.PathLike, dict or torch.nn.Module
        See :func:`load_source`; the network must come from the model registry (the package
        rebuilds it with ``napari_pclesr.models.create``).
    path : str or os.PathLike
        The ``.zip`` to write.
    overwrite, tolerance
        As in :func:`export_torchscript`; every converted weight format is checked.
    name : str, optional
        The model's name in the package (default "napari-pclesr ARCH xSCALE").
    authors : sequence of str
        Who trained the model.
    license : str
        SPDX identifier of the weights' licence.
    weight_formats : sequence of str
        Among :data:`BIOIMAGEIO_WEIGHT_FORMATS`; ``pytorch_state_dict`` is always included.
    test_frame : array_like (H, W), optional
        The test input, in raw intensity units (for example a frame of your recording). By
        default a phantom seen through the simulated fibre bundle, 128 × 128.

    Returns
    -------
    ExportReport
        ``notes`` lists what the package cannot express.

    Raises
    ------
    ExportError
        If a weight format differs from PyTorch by more than ``tolerance``, or the package
        fails ``bioimageio.core.test_model`` (the message lists the failed checks).
    MissingExtraError
        If ``bioimageio.core`` (or, for ONNX weights, ``onnx``/``onnxruntime``) is missing.
    """
    weight_formats = _check_weight_formats(weight_formats)
    packages = ("bioimageio.core", "bioimageio.spec")
    if "onnx" in weight_formats:
        packages += ("onnx", "onnxscript", "onnxruntime")
    _require(*packages, purpose="bioimage.io export")
    target = _prepare_target(path, checkpoint, overwrite)
    if target.suffix.lower() != ".zip":
        raise ValueError(f"a bioimage.io package is a .zip file; got {target}.")
    source = load_source(checkpoint)
    if source.arch is None:
        raise ValueError(
            "a bioimage.io package rebuilds the network by its registry name, but this network "
            "has none; export a checkpoint of a registered model (pclesr models lists them)."
        )
    from napari_pclesr.export import _bioimageio

    name = name or f"napari-pclesr {source.arch} x{source.scale}"
    _bioimageio.check_metadata(name, authors, license)
    with tempfile.TemporaryDirectory(prefix="pclesr-export-") as folder:
        files = _bioimageio.PackageFiles(Path(folder))
        differences = _write_weights(source, files, weight_formats, tolerance)
        if test_frame is None:
            test_frame = _test_frame(source.scale, max(_TEST_FRAME_SIDE, source.min_side))
        _bioimageio.write_test_files(
            files, test_frame, _reference_output(source, test_frame), source.min_side
        )
        description = _bioimageio.describe(
            source,
            files,
            name=name,
            authors=authors,
            license=license,
            citations=_citations(source.arch),
            processing=bioimageio_processing(source.normalisation),
            differences=differences,
            tolerance=tolerance,
        )
        with atomic_path(target) as temporary:
            _bioimageio.save_and_test(description, temporary)
    return ExportReport("bioimageio", target, differences, tolerance, _bioimageio.LIMITS)


# -- the normalisation in bioimage.io terms -----------------------------------------------------


def bioimageio_processing(normalisation: Normalisation) -> tuple[list, list]:
    """The bioimage.io pre- and post-processing that reproduce our normalisation, as far as
    the spec can.

    Our normalisation maps each frame by its ``normalisation.percentiles`` over the field of
    view (FoV) to 0 and 1, fills the outside of the FoV with the nearest FoV values, and maps the
    output back with the inverse. The spec's ``scale_range`` with the same percentiles over the
    frame's y and x axes expresses the first step, except that it takes no mask: the
    percentiles are those of the whole frame, zero corners included. The spec has no nearest-
    value fill, and no post-processing reads another tensor's statistics and inverts them, so
    the output stays in the normalised units. Keep :func:`_reference_input` beside it in step:
    the package's test output is computed with our own normalisation, so
    ``bioimageio.core.test_model`` fails until the two agree.

    Returns
    -------
    preprocessing, postprocessing : list of bioimage.io processing descriptions
    """
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        EnsureDtypeDescr,
        EnsureDtypeKwargs,
        ScaleRangeDescr,
        ScaleRangeKwargs,
    )

    low, high = normalisation.percentiles
    per_frame = ScaleRangeKwargs(
        axes=(AxisId("y"), AxisId("x")), min_percentile=low, max_percentile=high
    )
    preprocessing = [
        EnsureDtypeDescr(kwargs=EnsureDtypeKwargs(dtype="float32")),
        ScaleRangeDescr(kwargs=per_frame),
    ]
    return preprocessing, []


def _reference_input(frame: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """Our normalisation of a whole frame, as the spec can express it (no FoV mask, no fill),
    (1, 1, H, W)."""
    whole_frame = dataclasses.replace(normalisation, fill_outside=False)
    normalised, _, _ = whole_frame.normalise(frame)
    return normalised[None, None]


def _reference_output(source: ExportSource, frame) -> np.ndarray:
    """The PyTorch network's output for one raw frame, (1, 1, s·H, s·W) float32."""
    normalised = torch.from_numpy(_reference_input(np.asarray(frame), source.normalisation))
    with torch.no_grad():
        return source.network(normalised).numpy().astype(np.float32)


def _test_frame(scale: int, side: int = _TEST_FRAME_SIDE, seed: int = 0) -> np.ndarray:
    """A phantom seen through the simulated fibre bundle, as pCLE frames look (0 outside the
    circular FoV), ``side`` × ``side`` LR pixels."""
    from napari_pclesr.data import PairedSequences, phantom

    hr_side = side * scale
    pairs = PairedSequences([phantom((hr_side, hr_side), seed=seed)[None]], scale=scale)
    return pairs.lr(0, seed=seed)[0]


def _citations(arch: str) -> list[tuple[str, str]]:
    cited = [_CITATIONS["supervised pCLE SR"]]
    if arch in _CITATIONS:
        cited.append(_CITATIONS[arch])
    return cited


# -- writing and checking -----------------------------------------------------------------------


def _check_inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(shape, generator=generator) for shape in _CHECK_SHAPES]


def _write_checked_torchscript(source: ExportSource, path: Path, tolerance: float) -> float:
    # TorchScript runs in PyTorch, so the network keeps the layer forms PyTorch runs fastest.
    network = _frozen_copy(source.network)
    with warnings.catch_warnings():
        # The trace is checked on other shapes below, which is what these warnings are about.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(network, _check_inputs()[0], check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={_METADATA_KEY: _metadata_json(source)})
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(batch)).numpy()

    return _checked_difference("TorchScript", source.network, run, tolerance)


def _write_checked_onnx(source: ExportSource, path: Path, tolerance: float) -> tuple[float, int]:
    """Write and check an ONNX file; return the difference and the operator set used."""
    import onnx
    import onnxruntime

    network = portable_network(source.network)
    dim = torch.export.Dim
    axes = {0: dim("batch"), 2: dim("height"), 3: dim("width")}
    with _quiet_onnx_exporter():
        program = torch.onnx.export(
            network,
            (_check_inputs()[0],),
            dynamo=True,
            dynamic_shapes=(axes,),
            input_names=["lr"],
            output_names=["sr"],
            opset_version=_ONNX_OPSET,
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {_METADATA_KEY: _metadata_json(source)})
    onnx.save(proto, str(path))
    opset = next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return _checked_difference("ONNX", source.network, run, tolerance), int(opset)


def _checked_difference(
    runtime: str, reference: nn.Module, run: Callable[[np.ndarray], np.ndarray], tolerance: float
) -> float:
    """Largest |run(x) − reference(x)| over the check batches; ExportError above tolerance."""
    worst = 0.0
    for batch in _check_inputs():
        with torch.no_grad():
            expected = reference(batch).numpy()
        try:
            actual = np.asarray(run(batch.numpy()))
        except Exception as exc:  # the runtimes raise many types; all mean the export is wrong
            raise ExportError(
                f"the {runtime} export fails on a batch of shape {tuple(batch.shape)} "
                f"({type(exc).__name__}: {_first_line(exc)}); "
                "it froze a shape the network does not. Nothing was written."
            ) from exc
        if actual.shape != expected.shape:
            raise ExportError(
                f"the {runtime} export turned a batch of shape {tuple(batch.shape)} into "
                f"{actual.shape}, but the network gives {expected.shape}: its batch, height or "
                "width axis is not dynamic. Nothing was written."
            )
        difference = float(np.max(np.abs(actual.astype(np.float64) - expected)))
        worst = max(worst, difference if np.isfinite(difference) else np.inf)
    if not worst <= tolerance:
        raise ExportError(
            f"the {runtime} export differs from the PyTorch network by up to {worst:.3g}, more "
            f"than the tolerance {tolerance:g}; nothing was written. Report this network's "
            "export as a bug, or pass a larger tolerance if the difference is acceptable."
        )
    return worst


def _write_weights(source: ExportSource, files, weight_formats, tolerance) -> dict[str, float]:
    """Write every weight format into the package folder; the differences of converted ones."""
    torch.save(source.network.state_dict(), files.state_dict)
    differences = {}
    if "torchscript" in weight_formats:
        differences["torchscript"] = _write_checked_torchscript(
            source, files.torchscript, tolerance
        )
    if "onnx" in weight_formats:
        differences["onnx"], files.onnx_opset = _write_checked_onnx(source, files.onnx, tolerance)
    return differences


def _metadata_json(source: ExportSource) -> str:
    return json.dumps(source.metadata(), sort_keys=True)


@contextlib.contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """Silence the exporter's progress and its notes about optional packages (torchvision)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# -- arguments ----------------------------------------------------------------------------------


def _prepare_target(path, checkpoint, overwrite: bool) -> Path:
    """The output path, refused if it is the input or exists (unless ``overwrite``)."""
    from napari_pclesr.cli._common import refuse_overwriting_inputs

    target = Path(path)
    inputs = [checkpoint] if isinstance(checkpoint, str | os.PathLike) else []
    refuse_overwriting_inputs([target], [p for p in inputs if Path(p).exists()])
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder; give the file to write.")
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} already exists; choose another output path or pass --overwrite "
            "(overwrite=True) to replace it."
        )
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {target}: the folder {target.parent} does not exist."
        )
    return target


def _check_weight_formats(weight_formats) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(["pytorch_state_dict", *weight_formats]))
    unknown = [name for name in chosen if name not in BIOIMAGEIO_WEIGHT_FORMATS]
    if unknown:
        raise ValueError(
            f"unknown bioimage.io weight format(s) {', '.join(map(repr, unknown))}; choose among "
            f"{', '.join(BIOIMAGEIO_WEIGHT_FORMATS)}."
        )
    return chosen


def _require(*modules: str, purpose: str) -> None:
    """Raise MissingExtraError naming what to install if a module cannot be imported."""
    import importlib

    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingExtraError(
            f"{purpose} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed; install the export extra: {INSTALL_HINT}"
        )
