"""Field-of-view (FoV) masks: find the circular imaging area of a pCLE recording.

A pCLE image is bright inside the circle of the fibre bundle and dark outside, where video
exports also carry a burnt-in logo and scale bar. :func:`estimate_fov` finds the disc from the
data alone: the per-pixel maximum over a few frames is thresholded, the largest connected
region is kept (burnt-in text is small and detached from the disc), its holes are filled and a
circle is fitted to its outline. Processing and metrics then ignore everything outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_pclesr._validation import as_grey_float

#: Fraction of the (1st–99.5th percentile) range of the per-pixel maximum above which a pixel
#: counts as lit. Low, so that dark tissue inside the FoV is kept.
LIT_FRACTION = 0.05
#: The fitted circle is used only if it and the lit region overlap by at least this much
#: (intersection over union); otherwise the FoV is not circular and the region is used as is.
MIN_CIRCLE_IOU = 0.9
#: A lit region smaller than this fraction of the frame is not a pCLE field of view (which
#: fills most of the frame); the whole frame is used instead.
MIN_FOV_FRACTION = 0.1
#: The circle is shrunk by this many pixels so that its soft rim stays outside the mask.
RIM_MARGIN_PX = 1.0


@dataclass(frozen=True)
class FieldOfView:
    """The imaging area of a recording.

    Attributes
    ----------
    mask : numpy.ndarray
        bool (H, W), True inside the field of view.
    circle : tuple of float or None
        ``(row, col, radius)`` of the fitted circle in pixels, or None when the area is not
        circular (or fills the whole frame).
    """

    mask: np.ndarray
    circle: tuple[float, float, float] | None

    @classmethod
    def from_circle(cls, shape: tuple[int, int], circle) -> FieldOfView:
        """The FoV of a known circle ``(row, col, radius)``; its rim is left out of the mask."""
        circle = tuple(float(value) for value in circle)
        inner = (circle[0], circle[1], max(circle[2] - RIM_MARGIN_PX, 0.0))
        return cls(circle_mask(shape, inner), circle)


def circle_mask(shape: tuple[int, int], circle: tuple[float, float, float]) -> np.ndarray:
    """Return a bool (H, W) mask that is True at pixel centres within ``circle``.

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the mask.
    circle : tuple of float
        ``(row, col, radius)`` in pixels.
    """
    row, col, radius = (float(v) for v in circle)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - row) ** 2 + (cols - col) ** 2 <= radius**2


def estimate_fov(frames: np.ndarray) -> FieldOfView:
    """Estimate the field of view from a few frames.

    Parameters
    ----------
    frames : numpy.ndarray
        (K, H, W) or (H, W) frames of one recording, any numeric type. A few frames spread
        over the recording are enough; more make the estimate robust to dark frames.
        Non-finite pixels count as dark.

    Returns
    -------
    FieldOfView
        A circular mask when the lit area is a disc (possibly clipped by the frame border),
        the lit area itself when it is not, and the whole frame when nothing is dark or the
        lit area is too small to be a field of view.
    """
    stack = as_grey_float(frames, name="frames for the FoV estimate", allow_nan=True)
    if stack.ndim == 2:
        stack = stack[None]
    # NaN or infinite pixels (e.g. stored outside the FoV) count as unlit, not as an error:
    # reading a file must work whatever its values; processing checks them.
    peak = np.nan_to_num(stack, nan=0.0, posinf=0.0, neginf=0.0).max(axis=0)
    whole = FieldOfView(np.ones(peak.shape, bool), None)
    low, high = np.percentile(peak, [1.0, 99.5])
    if not high > low:
        return whole
    lit = peak > low + LIT_FRACTION * (high - low)
    # An opening cuts thin bridges between the disc and burnt-in text or scale bars.
    lit = ndi.binary_opening(lit, structure=_disk(2))
    labels, n_regions = ndi.label(lit)
    if n_regions == 0:
        return whole
    sizes = np.bincount(labels.ravel())[1:]
    region = ndi.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    if not MIN_FOV_FRACTION <= region.mean() < 0.97:
        return whole
    circle = _fit_circle(region)
    if circle is not None:
        disc = circle_mask(peak.shape, circle)
        iou = np.logical_and(disc, region).sum() / max(1, np.logical_or(disc, region).sum())
        if iou >= MIN_CIRCLE_IOU:
            return FieldOfView.from_circle(peak.shape, circle)
    return FieldOfView(region, None)


def _disk(radius: int) -> np.ndarray:
    rows, cols = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return rows**2 + cols**2 <= radius**2


def _fit_circle(region: np.ndarray) -> tuple[float, float, float] | None:
    """Least-squares (Kasa) circle through the region's outline, robust to a few outliers.

    Outline pixels on the frame border are left out: there the disc is clipped by the frame,
    not bounded by its own edge.
    """
    outline = region & ~ndi.binary_erosion(region)
    outline[[0, -1], :] = False
    outline[:, [0, -1]] = False
    rows, cols = np.nonzero(outline)
    if rows.size < 12:
        return None
    rows = rows.astype(np.float64)
    cols = cols.astype(np.float64)
    keep = np.ones(rows.size, bool)
    circle = None
    for _ in range(3):
        design = np.column_stack([rows[keep], cols[keep], np.ones(keep.sum())])
        target = rows[keep] ** 2 + cols[keep] ** 2
        (a, b, c), *_ = np.linalg.lstsq(design, target, rcond=None)
        centre_row, centre_col = a / 2, b / 2
        radius_sq = c + centre_row**2 + centre_col**2
        if radius_sq <= 0:
            return None
        circle = (float(centre_row), float(centre_col), float(np.sqrt(radius_sq)))
        residual = np.abs(np.hypot(rows - centre_row, cols - centre_col) - circle[2])
        spread = np.median(np.abs(residual[keep] - np.median(residual[keep])))
        new_keep = residual <= max(2.0, 4.0 * 1.4826 * spread)
        if new_keep.sum() < 12 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return circle
