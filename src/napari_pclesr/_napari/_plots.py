"""Small live plots for the docks, drawn with QPainter: a line plot and a bar chart.

Why not matplotlib or pyqtgraph: the docks need two plain charts (loss curves that grow point by
point, bars with error bars). matplotlib is not a napari dependency, and importing its Qt
backend took 1.8 s on the development machine, more than the 0.5 s the UI may stall when a
dock opens; pyqtgraph would be a new dependency for two charts. These widgets import nothing,
draw in well under a millisecond per point, follow the napari theme's text colour, and take
the dock's width without asking for more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFontMetrics, QPainter, QPainterPath, QPalette, QPen
from qtpy.QtWidgets import QSizePolicy, QToolTip, QWidget

#: Distinct colours that read on napari's dark and light themes.
PALETTE = ("#4e9ae8", "#f0a030", "#59c46a", "#e0506a", "#a87fe0", "#40c0c0")
#: How near (pixels) a click must land to a point to pick it.
PICK_RADIUS = 8
#: Pixels between the plot frame and the widget's edge, besides the tick labels.
MARGIN = 6
TICK_LENGTH = 4
TARGET_TICKS = 5


def nice_ticks(low: float, high: float, target: int = TARGET_TICKS) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw_step = (high - low) / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw_step))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw_step)
    first = math.ceil(low / step - 1e-9) * step
    count = math.floor((high - first) / step + 1e-9) + 1
    return [first + index * step for index in range(count)]


def tick_label(value: float, ticks: list[float]) -> str:
    """A tick value with as many decimals as the tick spacing needs."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(value) or 1.0
    if step >= 1e4 or step < 1e-4:
        return f"{value:.2g}"
    # The fewest decimals that write the step exactly (0.25 needs two, 0.2 one).
    decimals = next(d for d in range(8) if abs(round(step, d) - step) <= 1e-9 * step)
    text = f"{value:.{decimals}f}"
    return "0" if text.lstrip("-").strip("0.") == "" else text


def padded_range(values, pad: float = 0.05, include_zero: bool = False) -> tuple[float, float]:
    """(low, high) around the finite ``values``, widened by ``pad`` of the span."""
    finite = [v for v in values if math.isfinite(v)]
    if include_zero:
        finite.append(0.0)
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if high == low:
        spread = abs(high) * 0.1 or 1.0
        return low - spread, high + spread
    span = high - low
    return low - pad * span, high + pad * span


class _Chart(QWidget):
    """Axes, ticks and labels shared by the charts; subclasses draw inside ``plot_rect``."""

    def __init__(self, x_label: str = "", y_label: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.x_label = x_label
        self.y_label = y_label
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMouseTracking(True)

    def sizeHint(self) -> QSize:
        return QSize(280, 170)

    def minimumSizeHint(self) -> QSize:
        return QSize(140, 100)

    def foreground(self) -> QColor:
        return self.palette().color(QPalette.WindowText)

    def _frame(self, metrics: QFontMetrics, y_ticks: list[str], bottom_rows: int) -> QRectF:
        left = MARGIN + metrics.height() + max(metrics.horizontalAdvance(t) for t in y_ticks)
        left += TICK_LENGTH + 2
        bottom = MARGIN + bottom_rows * metrics.height() + TICK_LENGTH
        top = MARGIN + metrics.height() // 2
        return QRectF(left, top, self.width() - left - MARGIN, self.height() - top - bottom)

    def _draw_y_axis(self, painter, frame: QRectF, ticks, to_y, labels) -> None:
        metrics = painter.fontMetrics()
        grid = QColor(self.foreground())
        grid.setAlpha(40)
        for value, text in zip(ticks, labels, strict=True):
            y = to_y(value)
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(frame.left(), y), QPointF(frame.right(), y))
            painter.setPen(self.foreground())
            painter.drawLine(QPointF(frame.left() - TICK_LENGTH, y), QPointF(frame.left(), y))
            width = metrics.horizontalAdvance(text)
            painter.drawText(
                QPointF(frame.left() - TICK_LENGTH - 2 - width, y + metrics.ascent() / 2 - 1), text
            )
        painter.save()
        painter.translate(MARGIN + metrics.ascent(), frame.center().y())
        painter.rotate(-90)
        painter.drawText(QPointF(-metrics.horizontalAdvance(self.y_label) / 2, 0), self.y_label)
        painter.restore()
        painter.drawLine(frame.topLeft(), frame.bottomLeft())
        painter.drawLine(frame.bottomLeft(), frame.bottomRight())


@dataclass
class Series:
    """One line of a :class:`LinePlot`: its points, legend label and look (``marker``:
    ``""``, ``"dot"`` or ``"cross"``; ``joined``: a line through the points)."""

    label: str
    colour: str
    marker: str = ""
    joined: bool = True
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)


class LinePlot(_Chart):
    """A line plot with axes, ticks and a legend that grows as points arrive.

    Parameters
    ----------
    x_label, y_label : str
        Axis titles.
    log_y : bool
        A logarithmic value axis (for losses, which shrink by orders of magnitude); values
        <= 0 are left out.

    Attributes
    ----------
    h_lines : list of (float, str)
        Dashed horizontal guides (value, colour), e.g. a threshold.
    cursor_x : float or None
        A vertical line at this x (e.g. the viewer's current frame).
    on_click : callable or None
        Called with the x of the point nearest to a click (within :data:`PICK_RADIUS`).
    """

    def __init__(self, x_label: str = "", y_label: str = "", log_y: bool = False, parent=None):
        super().__init__(x_label, y_label, parent)
        self.log_y = log_y
        self.series: dict[str, Series] = {}
        self.empty_text = "No data yet."
        self.h_lines: list[tuple[float, str]] = []
        self.cursor_x: float | None = None
        self.on_click: Callable[[float], None] | None = None
        # Each point drawn: (pixel x, pixel y, data x, series, index among its drawn points).
        self._drawn: list[tuple[float, float, float, str, int]] = []

    def add_series(
        self,
        key: str,
        label: str,
        colour: str | None = None,
        marker: str = "",
        joined: bool = True,
    ) -> None:
        """Declare a series (its legend entry appears with its first point)."""
        colour = colour or PALETTE[len(self.series) % len(PALETTE)]
        self.series[key] = Series(label, colour, marker, joined)

    def set_points(self, key: str, xs, ys) -> None:
        """Replace a series' points and redraw."""
        line = self.series[key]
        line.xs[:] = [float(x) for x in xs]
        line.ys[:] = [float(y) for y in ys]
        self.update()

    def set_cursor(self, x: float | None) -> None:
        """Move the vertical cursor line (None hides it)."""
        self.cursor_x = x
        self.update()

    def remove_series(self) -> None:
        """Forget every series and guide (for a run that logs other terms)."""
        self.series.clear()
        self.h_lines.clear()
        self.cursor_x = None
        self.update()

    def append(self, key: str, x: float, y: float) -> None:
        """Add a point to a series and redraw."""
        line = self.series[key]
        line.xs.append(float(x))
        line.ys.append(float(y))
        self.update()

    def clear(self) -> None:
        """Remove every point (the series stay declared)."""
        for line in self.series.values():
            line.xs.clear()
            line.ys.clear()
        self.update()

    def n_points(self, key: str) -> int:
        """How many points a series holds."""
        return len(self.series[key].xs)

    # -- drawing ----------------------------------------------------------------------------

    def _shown(self, y: float) -> float | None:
        if not math.isfinite(y) or (self.log_y and y <= 0):
            return None
        return math.log10(y) if self.log_y else y

    def _y_ticks(self, low: float, high: float) -> tuple[list[float], list[str]]:
        if not self.log_y:
            ticks = nice_ticks(low, high)
            return ticks, [tick_label(t, ticks) for t in ticks]
        # 1, 2, 5 per decade; within a single decade every digit, to get at least three.
        for mantissas in ((1, 2, 5), tuple(range(1, 10))):
            inside = [
                math.log10(m) + power
                for power in range(math.floor(low), math.ceil(high) + 1)
                for m in mantissas
                if low <= math.log10(m) + power <= high
            ]
            if len(inside) >= 3:
                break
        inside = inside or [low, high]
        return inside, [f"{10**v:.2g}" for v in inside]

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        metrics = painter.fontMetrics()
        shown = {
            key: [
                (x, shown_y)
                for x, y in zip(line.xs, line.ys, strict=True)
                if (shown_y := self._shown(y)) is not None
            ]
            for key, line in self.series.items()
        }
        if not any(shown.values()):
            painter.setPen(self.foreground())
            painter.drawText(self.rect(), Qt.AlignCenter | Qt.TextWordWrap, self.empty_text)
            return
        points = [p for line in shown.values() for p in line]
        guides = [g for value, _ in self.h_lines if (g := self._shown(value)) is not None]
        y_low, y_high = padded_range([p[1] for p in points] + guides)
        x_low = min(0.0, min(p[0] for p in points))
        x_high = max(p[0] for p in points)
        x_high = x_high if x_high > x_low else x_low + 1.0
        y_ticks, y_labels = self._y_ticks(y_low, y_high)
        frame = self._frame(metrics, y_labels, bottom_rows=2)

        def to_x(x):
            return frame.left() + (x - x_low) / (x_high - x_low) * frame.width()

        def to_y(y):
            return frame.bottom() - (y - y_low) / (y_high - y_low) * frame.height()

        self._draw_y_axis(painter, frame, y_ticks, to_y, y_labels)
        x_ticks = nice_ticks(x_low, x_high)
        for value in x_ticks:
            x = to_x(value)
            painter.drawLine(QPointF(x, frame.bottom()), QPointF(x, frame.bottom() + TICK_LENGTH))
            text = tick_label(value, x_ticks)
            baseline = frame.bottom() + 4 + metrics.ascent()
            painter.drawText(QPointF(x - metrics.horizontalAdvance(text) / 2, baseline), text)
        title_width = metrics.horizontalAdvance(self.x_label)
        painter.drawText(
            QPointF(frame.center().x() - title_width / 2, self.height() - MARGIN), self.x_label
        )
        painter.setClipRect(frame.adjusted(-3, -3, 3, 3))
        self._draw_guides(painter, frame, to_x, to_y)
        self._drawn = []
        for key, line_points in shown.items():
            pixels = [(to_x(x), to_y(y)) for x, y in line_points]
            self._draw_line(painter, self.series[key], pixels)
            self._drawn += [
                (px, py, x, key, index)
                for index, ((px, py), (x, _)) in enumerate(zip(pixels, line_points, strict=True))
            ]
        painter.setClipping(False)
        self._draw_legend(painter, frame, [key for key, pts in shown.items() if pts])

    def _draw_guides(self, painter, frame: QRectF, to_x, to_y) -> None:
        for value, colour in self.h_lines:
            if (shown := self._shown(value)) is not None:
                painter.setPen(QPen(QColor(colour), 1, Qt.DashLine))
                y = to_y(shown)
                painter.drawLine(QPointF(frame.left(), y), QPointF(frame.right(), y))
        if self.cursor_x is not None:
            grey = QColor(self.foreground())
            grey.setAlpha(140)
            painter.setPen(QPen(grey, 1))
            x = to_x(self.cursor_x)
            painter.drawLine(QPointF(x, frame.top()), QPointF(x, frame.bottom()))

    def _draw_line(self, painter, line: Series, points) -> None:
        colour = QColor(line.colour)
        painter.setPen(QPen(colour, 1.6))
        if line.joined and len(points) > 1:
            path = QPainterPath(QPointF(*points[0]))
            for point in points[1:]:
                path.lineTo(QPointF(*point))
            painter.drawPath(path)
        if line.marker == "cross":
            painter.setPen(QPen(colour, 2))
            for x, y in points:
                painter.drawLine(QPointF(x - 3.5, y - 3.5), QPointF(x + 3.5, y + 3.5))
                painter.drawLine(QPointF(x - 3.5, y + 3.5), QPointF(x + 3.5, y - 3.5))
        elif line.marker or len(points) == 1:
            painter.setBrush(colour)
            for x, y in points:
                painter.drawEllipse(QPointF(x, y), 2.5, 2.5)
            painter.setBrush(Qt.NoBrush)

    def point_near(self, position: QPointF) -> float | None:
        """The x value of the drawn point nearest to ``position`` (widget pixels), if within
        :data:`PICK_RADIUS`."""
        best, nearest = PICK_RADIUS**2, None
        for px, py, x, _, _ in self._drawn:
            distance = (px - position.x()) ** 2 + (py - position.y()) ** 2
            if distance <= best:
                best, nearest = distance, x
        return nearest

    def pixel_of(self, key: str, index: int) -> QPointF:
        """Where the ``index``-th drawn point of series ``key`` was last drawn (for tests)."""
        for px, py, _, drawn_key, drawn_index in self._drawn:
            if (drawn_key, drawn_index) == (key, index):
                return QPointF(px, py)
        raise ValueError(f"point {index} of {key!r} is not drawn")

    def mousePressEvent(self, event) -> None:
        x = self.point_near(QPointF(event.pos()))
        if x is not None and self.on_click is not None:
            self.on_click(x)
        super().mousePressEvent(event)

    def _draw_legend(self, painter, frame: QRectF, keys: list[str]) -> None:
        metrics = painter.fontMetrics()
        x = frame.right() - 4
        y = frame.top() + 2
        for key in keys:
            line = self.series[key]
            width = metrics.horizontalAdvance(line.label)
            painter.setPen(QPen(QColor(line.colour), 2))
            middle = y + metrics.height() / 2
            painter.drawLine(QPointF(x - width - 18, middle), QPointF(x - width - 4, middle))
            painter.setPen(self.foreground())
            painter.drawText(QPointF(x - width, y + metrics.ascent()), line.label)
            y += metrics.height()


@dataclass(frozen=True)
class Bar:
    """One bar of a :class:`BarChart`: mean, spread (± error bar) and colour."""

    label: str
    value: float
    error: float = math.nan
    colour: str = PALETTE[0]


class BarChart(_Chart):
    """Bars with ± error bars, one per method; hovering a bar shows its numbers."""

    def __init__(self, y_label: str = "", parent=None):
        super().__init__("", y_label, parent)
        self.bars: list[Bar] = []
        self.digits = 3
        self.empty_text = "No scores yet."
        self._bar_rects: list[QRectF] = []

    def set_bars(self, bars: list[Bar], y_label: str | None = None, digits: int = 3) -> None:
        """Replace the bars (and optionally the axis title) and redraw."""
        self.bars = list(bars)
        if y_label is not None:
            self.y_label = y_label
        self.digits = digits
        self.update()

    def describe(self, bar: Bar) -> str:
        """The numbers of a bar as the hover text shows them."""
        text = f"{bar.label}: {bar.value:.{self.digits}f}"
        return text if math.isnan(bar.error) else f"{text} ± {bar.error:.{self.digits}f}"

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        metrics = painter.fontMetrics()
        finite = [bar for bar in self.bars if math.isfinite(bar.value)]
        if not finite:
            painter.setPen(self.foreground())
            painter.drawText(self.rect(), Qt.AlignCenter | Qt.TextWordWrap, self.empty_text)
            self._bar_rects = []
            return
        extents = [
            bar.value + sign * (0 if math.isnan(bar.error) else bar.error)
            for bar in finite
            for sign in (-1, 1)
        ]
        low, high = padded_range(extents, include_zero=True)
        ticks = nice_ticks(low, high)
        labels = [tick_label(t, ticks) for t in ticks]
        frame = self._frame(metrics, labels, bottom_rows=1)

        def to_y(y):
            return frame.bottom() - (y - low) / (high - low) * frame.height()

        self._draw_y_axis(painter, frame, ticks, to_y, labels)
        slot = frame.width() / len(self.bars)
        self._bar_rects = []
        for index, bar in enumerate(self.bars):
            left = frame.left() + index * slot + 0.15 * slot
            width = 0.7 * slot
            zero, top = to_y(max(low, 0.0)), to_y(bar.value if math.isfinite(bar.value) else 0)
            rect = QRectF(left, min(zero, top), width, abs(zero - top))
            self._bar_rects.append(rect)
            painter.fillRect(rect, QColor(bar.colour))
            painter.setPen(QPen(self.foreground(), 1.2))
            if math.isfinite(bar.error):
                centre = left + width / 2
                lower, upper = to_y(bar.value - bar.error), to_y(bar.value + bar.error)
                painter.drawLine(QPointF(centre, lower), QPointF(centre, upper))
                for y in (lower, upper):
                    painter.drawLine(QPointF(centre - width / 5, y), QPointF(centre + width / 5, y))
            text = metrics.elidedText(bar.label, Qt.ElideRight, int(slot) - 2)
            painter.drawText(
                QPointF(
                    left + width / 2 - metrics.horizontalAdvance(text) / 2,
                    frame.bottom() + 4 + metrics.ascent(),
                ),
                text,
            )

    def mouseMoveEvent(self, event) -> None:
        position = event.pos()
        for bar, rect in zip(self.bars, self._bar_rects, strict=False):
            if rect.adjusted(0, -20, 0, 20).contains(QPointF(position)):
                QToolTip.showText(event.globalPos(), self.describe(bar), self)
                return
        QToolTip.hideText()
