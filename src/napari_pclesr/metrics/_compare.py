"""Per-frame scores of SR methods and the papers' comparison table with Tot_cs and t-tests."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from napari_pclesr._atomic import atomic_path
from napari_pclesr.metrics._fidelity import psnr, ssim
from napari_pclesr.metrics._gcf import gcf
from napari_pclesr.metrics._inputs import as_mask_stack, as_unit_stack, check_same_shape
from napari_pclesr.metrics._noise import noise_sigma

# Scale (in GCF units) of the logistic that maps ΔGCF vs LR to (0, 1) in Tot_cs.
TOT_CS_GCF_SCALE = 0.5
TOT_CS_DEFINITION = (
    "Tot_cs = ½·[clip(SSIM, 0, 1) + 1/(1 + exp(−ΔGCF_LR / 0.5))], computed per frame; "
    "ΔGCF_LR = GCF(method) − GCF(LR), so LR itself scores ½·[clip(SSIM_LR, 0, 1) + ½]."
)
STATS_NOTE = (
    "mean ± sample std (ddof=1) over frames; p: two-sided paired t-test (scipy.stats.ttest_rel) "
    "of the per-frame values against the baseline {baseline}, NaN with fewer than 2 frames or "
    "when all differences are 0; the GCF test covers ΔGCF vs LR and vs HR-hat."
)
DEFAULT_BASELINE = "LR"
#: Pixels between the taps of the noise estimate. pCLE noise is independent from fibre to
#: fibre, not from pixel to pixel: Delaunay interpolation spreads each fibre's noise over its
#: triangles. A Cellvizio-like bundle (30,000 fibres in a 576-pixel disc) has a lattice pitch
#: of 3.2 px, so taps 4 px apart, the first whole number above it, see different fibres.
NOISE_SPACING_PX = 4
#: A method whose mean ΔGCF vs LR is positive while its mean noise ratio exceeds this is
#: flagged: its contrast gain is likely amplified noise. Calibrated in docs/metrics.md.
NOISE_RATIO_LIMIT = 3.0
NOISE_FLAG_NOTE = (
    "⚠ = contrast gain (ΔGCF vs LR > 0) with a noise ratio above {limit:g}: the extra contrast is "
    "likely amplified noise, not detail."
)
NOISE_DEFINITION = (
    f"noise σ: Immerkær's estimate (1996) with its 3×3 mask's taps {NOISE_SPACING_PX} px apart "
    "(more than one fibre pitch), inside the FoV; noise ratio = noise σ(method) / noise σ(LR)."
)


@dataclass(frozen=True)
class Score:
    """One column of the comparison: key in :class:`FrameScores`, label and number format."""

    key: str
    label: str
    digits: int
    tested: bool  # whether a paired t-test against the baseline is reported


SCORES = (
    Score("ssim", "SSIM", 4, True),
    Score("psnr", "PSNR [dB]", 2, True),
    Score("gcf", "GCF", 4, True),
    Score("delta_gcf_lr", "ΔGCF vs LR", 4, False),
    Score("delta_gcf_hr", "ΔGCF vs HR-hat", 4, False),
    Score("tot_cs", "Tot_cs", 4, True),
    Score("noise", "noise σ", 4, False),
    Score("noise_ratio", "noise ratio", 3, False),
)


def tot_cs(ssim_values, delta_gcf_lr):
    """The composite score Tot_cs of one or more frames (see :data:`TOT_CS_DEFINITION`).

    SSIM keeps its own [0, 1] scale (negative values, anti-correlated structure, count as 0)
    and ΔGCF vs LR is squashed by a fixed logistic of scale 0.5 centred on 0 (no change from
    LR gives ½). Neither normalisation looks at other methods, so a method's score does not
    change when methods are added to a table.

    Parameters
    ----------
    ssim_values : float or array_like
        SSIM of the method against HR-hat.
    delta_gcf_lr : float or array_like
        GCF(method) − GCF(LR) for the same frames.

    Returns
    -------
    float or numpy.ndarray
        Values in [0, 1], of the broadcast shape of the inputs.
    """
    ssim_part = np.clip(np.asarray(ssim_values, dtype=np.float64), 0.0, 1.0)
    gcf_part = 0.5 * (1.0 + np.tanh(np.asarray(delta_gcf_lr) / (2.0 * TOT_CS_GCF_SCALE)))
    result = 0.5 * (ssim_part + gcf_part)
    return float(result) if result.ndim == 0 else result


@dataclass(frozen=True)
class FrameScores:
    """Per-frame scores of one method, each a (T,) float64 array (T = 1 for a single image).

    ``delta_gcf_lr`` is GCF(method) − GCF(LR) and ``delta_gcf_hr`` GCF(method) − GCF(HR-hat);
    ``noise`` the no-reference noise estimate (:func:`noise_sigma` on the fibre grid) and
    ``noise_ratio`` noise(method) / noise(LR).
    """

    ssim: np.ndarray
    psnr: np.ndarray
    gcf: np.ndarray
    delta_gcf_lr: np.ndarray
    delta_gcf_hr: np.ndarray
    noise: np.ndarray
    noise_ratio: np.ndarray

    @property
    def tot_cs(self) -> np.ndarray:
        """Per-frame Tot_cs (:func:`tot_cs`)."""
        return tot_cs(self.ssim, self.delta_gcf_lr)

    @property
    def n_frames(self) -> int:
        return len(self.ssim)

    def values(self, key: str) -> np.ndarray:
        """The per-frame values of a score named as in :data:`SCORES`."""
        return getattr(self, key)

    def take(self, frames) -> FrameScores:
        """The scores of the selected frames (an index array, slice or boolean mask)."""
        return FrameScores(**{name: getattr(self, name)[frames] for name in FIELD_NAMES})

    def to_dict(self) -> dict[str, list[float]]:
        """Per-frame values as lists, Tot_cs included (JSON-ready; non-finite values as None)."""
        return {score.key: _json_list(self.values(score.key)) for score in SCORES}


FIELD_NAMES = tuple(f.name for f in fields(FrameScores))  # the stored per-frame arrays


def evaluate(sr, hr_hat, lr, mask=None, noise_spacing: int = NOISE_SPACING_PX) -> FrameScores:
    """Score an SR result against HR-hat and the LR input it was made from.

    Parameters
    ----------
    sr, hr_hat, lr : array_like
        Frames (H, W) or stacks (T, H, W) of one shape, intensities in [0, 1] (uint8 is
        divided by 255; see :func:`gcf` for values outside [0, 1]).
    mask : array_like of bool, optional
        Field of view, (H, W) or (T, H, W), used by every score (see :func:`ssim`,
        :func:`psnr`, :func:`gcf`, :func:`noise_sigma`).
    noise_spacing : int
        Spacing of the noise estimate's taps (:func:`noise_sigma`): the fibre pitch in pixels.

    Returns
    -------
    FrameScores
        SSIM(SR, HR-hat), PSNR(SR, HR-hat) with data range 1, GCF(SR), ΔGCF vs LR and ΔGCF
        vs HR-hat, the noise estimate and its ratio to the LR's, one value per frame.
    """
    return evaluate_methods(
        {"SR": sr}, hr_hat, lr, mask=mask, baseline=None, noise_spacing=noise_spacing
    )["SR"]


def evaluate_methods(
    sr_by_method: Mapping[str, object],
    hr_hat,
    lr,
    mask=None,
    baseline: str | None = DEFAULT_BASELINE,
    noise_spacing: int = NOISE_SPACING_PX,
) -> dict[str, FrameScores]:
    """Score several SR results of the same LR input, plus the LR baseline itself.

    GCF(LR), GCF(HR-hat) and the LR's noise are computed once for all methods.

    Parameters
    ----------
    sr_by_method : mapping of str to array_like
        SR frames or stacks by method name, each of the shape of ``hr_hat`` and ``lr``.
    hr_hat, lr, mask, noise_spacing
        As in :func:`evaluate`.
    baseline : str or None
        Name under which the LR input is scored as a method of its own (first in the result);
        None leaves it out.

    Returns
    -------
    dict of str to FrameScores
        The baseline first (when asked), then the methods in their given order.
    """
    if baseline is not None and baseline in sr_by_method:
        raise ValueError(
            f"a method is called {baseline!r}, the name of the LR baseline; rename it."
        )
    stacks = {
        f"SR {name!r}": as_unit_stack(data, f"SR {name!r}")[0]
        for name, data in sr_by_method.items()
    }
    hr_stack = as_unit_stack(hr_hat, "HR-hat")[0]
    lr_stack = as_unit_stack(lr, "LR")[0]
    shape = check_same_shape({**stacks, "HR-hat": hr_stack, "LR": lr_stack})
    as_mask_stack(mask, shape)  # fail early on a bad mask, before any work
    gcf_lr = gcf(lr_stack, mask)
    gcf_hr = gcf(hr_stack, mask)
    noise_lr = noise_sigma(lr_stack, mask, noise_spacing)
    to_score = {baseline: lr_stack} if baseline is not None else {}
    to_score.update(zip(sr_by_method, stacks.values(), strict=True))
    results = {}
    for name, stack in to_score.items():
        is_lr = stack is lr_stack
        gcf_values = gcf_lr if is_lr else gcf(stack, mask)
        noise = noise_lr if is_lr else noise_sigma(stack, mask, noise_spacing)
        with np.errstate(divide="ignore", invalid="ignore"):  # a noiseless LR: inf or NaN
            noise_ratio = noise / noise_lr
        results[name] = FrameScores(
            ssim=ssim(stack, hr_stack, 1.0, mask),
            psnr=psnr(stack, hr_stack, 1.0, mask),
            gcf=gcf_values,
            delta_gcf_lr=gcf_values - gcf_lr,
            delta_gcf_hr=gcf_values - gcf_hr,
            noise=noise,
            noise_ratio=noise_ratio,
        )
    return results


@dataclass(frozen=True)
class MethodSummary:
    """One row of the comparison: mean, std and p-value vs the baseline of each score.

    ``noisy_contrast`` flags a method whose mean ΔGCF vs LR is positive while its mean noise
    ratio exceeds :data:`NOISE_RATIO_LIMIT` (see :func:`noisy_contrast`).
    """

    name: str
    n_frames: int
    mean: dict[str, float]
    std: dict[str, float]
    p_value: dict[str, float]
    noisy_contrast: bool = False


def noisy_contrast(mean_delta_gcf_lr: float, mean_noise_ratio: float) -> bool:
    """Whether a contrast gain comes with more noise than :data:`NOISE_RATIO_LIMIT` allows.

    Tot_cs keeps its definition; this flag only makes visible that a high ΔGCF (and so a high
    Tot_cs) can be bought with noise, as the seed papers warn.
    """
    return bool(mean_delta_gcf_lr > 0 and mean_noise_ratio > NOISE_RATIO_LIMIT)


@dataclass(frozen=True)
class ComparisonTable:
    """The papers' comparison table; ``scores`` keeps the per-frame values of every row."""

    rows: tuple[MethodSummary, ...]
    baseline: str
    scores: dict[str, FrameScores]

    def __getitem__(self, name: str) -> MethodSummary:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no method {name!r} in the table; it has {[r.name for r in self.rows]}")

    @property
    def footer(self) -> str:
        """How Tot_cs, the noise flag and the statistics are defined."""
        return "\n".join(
            (
                TOT_CS_DEFINITION,
                NOISE_DEFINITION,
                NOISE_FLAG_NOTE.format(limit=NOISE_RATIO_LIMIT),
                STATS_NOTE.format(baseline=self.baseline),
            )
        )

    def to_text(self) -> str:
        """A plain-text table (mean ± std per score, p-values vs the baseline) and footer."""
        header = ["method", "frames"] + [s.label for s in SCORES]
        header += [f"p({s.label.split(' [')[0]})" for s in SCORES if s.tested]
        lines = [header]
        for row in self.rows:
            cells = [row.name + (" ⚠" if row.noisy_contrast else ""), str(row.n_frames)]
            cells += [format_mean_std(row.mean[s.key], row.std[s.key], s.digits) for s in SCORES]
            cells += [format_p_value(row.p_value[s.key]) for s in SCORES if s.tested]
            lines.append(cells)
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = [
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines
        ]
        return "\n".join(text) + "\n\n" + self.footer

    def __str__(self) -> str:
        return self.to_text()

    def to_records(self, frame: int | None = None) -> list[dict[str, object]]:
        """One flat dict per row: mean, std, p-value and, given ``frame``, that frame's values."""
        records = []
        for row in self.rows:
            record: dict[str, object] = {
                "method": row.name,
                "frames": row.n_frames,
                "noisy_contrast": row.noisy_contrast,
            }
            if frame is not None:
                record["frame"] = frame
                frame_scores = self.scores[row.name]
                for score in SCORES:
                    record[f"{score.key}_frame"] = float(frame_scores.values(score.key)[frame])
            for score in SCORES:
                record[f"{score.key}_mean"] = row.mean[score.key]
                record[f"{score.key}_std"] = row.std[score.key]
            for score in SCORES:
                if score.tested:
                    record[f"{score.key}_p"] = row.p_value[score.key]
            records.append(record)
        return records

    def to_csv(self, path, frame: int | None = None) -> Path:
        """Write :meth:`to_records` as CSV (atomically), the definitions as ``#`` lines.

        Returns the path written.
        """
        records = self.to_records(frame)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        for line in self.footer.splitlines():
            buffer.write(f"# {line}\n")
        return _write_text_atomically(path, buffer.getvalue())

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary rows, per-frame values of every method, and the definitions."""
        return {
            "baseline": self.baseline,
            "summary": [_json_record(record) for record in self.to_records()],
            "per_frame": {name: scores.to_dict() for name, scores in self.scores.items()},
            "definitions": {
                "tot_cs": TOT_CS_DEFINITION,
                "noise": NOISE_DEFINITION,
                "noisy_contrast": NOISE_FLAG_NOTE.format(limit=NOISE_RATIO_LIMIT),
                "statistics": STATS_NOTE.format(baseline=self.baseline),
            },
        }


def compare(
    results_by_method: Mapping[str, FrameScores], baseline: str = DEFAULT_BASELINE
) -> ComparisonTable:
    """Build the comparison table: mean ± std of every score, Tot_cs, t-tests vs the baseline.

    Parameters
    ----------
    results_by_method : mapping of str to FrameScores
        Per-frame scores by method, all over the same frames, the baseline included (as
        :func:`evaluate_methods` returns them).
    baseline : str
        The name of the LR baseline in ``results_by_method``.

    Returns
    -------
    ComparisonTable
        The baseline row first, then the methods in their given order.
    """
    if baseline not in results_by_method:
        raise ValueError(
            f"no baseline {baseline!r} among the methods {list(results_by_method)}; score the LR "
            "input as a method too (evaluate_methods does it for you)."
        )
    frame_counts = {name: scores.n_frames for name, scores in results_by_method.items()}
    if len(set(frame_counts.values())) > 1:
        raise ValueError(f"the methods were scored on different numbers of frames: {frame_counts}")
    names = [baseline, *(name for name in results_by_method if name != baseline)]
    reference = results_by_method[baseline]
    rows = tuple(_summarise(name, results_by_method[name], reference) for name in names)
    return ComparisonTable(rows, baseline, {name: results_by_method[name] for name in names})


def _summarise(name: str, scores: FrameScores, reference: FrameScores) -> MethodSummary:
    mean, std, p_value = {}, {}, {}
    for score in SCORES:
        values = scores.values(score.key)
        with np.errstate(invalid="ignore"):
            mean[score.key] = float(np.mean(values))
            std[score.key] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        if score.tested:
            p_value[score.key] = _paired_p_value(values, reference.values(score.key))
    flag = noisy_contrast(mean["delta_gcf_lr"], mean["noise_ratio"])
    return MethodSummary(name, scores.n_frames, mean, std, p_value, flag)


def _paired_p_value(values: np.ndarray, reference: np.ndarray) -> float:
    # Imported here: scipy.stats takes about a second to import, which the metrics dock must
    # not spend in the UI thread when it opens.
    from scipy import stats

    differences = values - reference
    if len(values) < 2 or not np.all(np.isfinite(differences)) or not differences.any():
        return math.nan
    with warnings.catch_warnings():
        # Constant non-zero differences give t = ±inf and p = 0, which scipy warns about.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(values, reference).pvalue)


def format_mean_std(mean: float, std: float, digits: int) -> str:
    """``mean ± std`` with ``digits`` decimals; the mean alone when std is NaN (one frame)."""
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{digits}f}"


def format_p_value(value: float) -> str:
    """A p-value as text: scientific below 1e-3, an em dash when undefined (NaN)."""
    if math.isnan(value):
        return "—"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"


def _json_list(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def _json_record(record: dict[str, object]) -> dict[str, object]:
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in record.items()
    }


def _write_text_atomically(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and os.replace."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="")
    return path
