"""What every dock of the plugin is built from.

A dock subclasses :class:`PclesrDock` and, in a few lines, gets:

* a scrolling body of labelled rows (:meth:`~PclesrDock.add_rows`) and collapsed
  "Advanced" sections (:meth:`~PclesrDock.add_advanced`), so that it fits a small screen
  beside the canvas; labels wrap and combo boxes never widen the dock to their longest item;
* a footer that stays in view: action buttons (:meth:`~PclesrDock.add_actions`), a progress
  bar and a :class:`StatusLine` that wraps, elides past a few lines and keeps the full text in
  its tooltip and in the napari notification of a warning or error
  (:meth:`~PclesrDock.report`);
* background work (:meth:`~PclesrDock.start_worker`) whose signals are dropped once the dock
  is closed, so a worker never reaches deleted widgets;
* a lifecycle: hiding the dock performs *Stop*; closing it, or the viewer, performs *Stop*,
  disconnects every viewer event it listened to (:meth:`~PclesrDock.listen`) and, for the
  viewer, waits (bounded) for the work to end. Docks of the plugin open as tabs of one another.

Example
-------
::

    class MyDock(PclesrDock):
        def __init__(self, napari_viewer):
            super().__init__(napari_viewer)
            self.image = tip(ComboBox(label="Image"), "The image to process.")
            self.add_rows([self.image])
            self.run = self.add_actions(tip(PushButton(text="Run"), "Start."))[0]
            self.listen(self.viewer.layers.events.inserted, self.refresh_choices)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import threading
import time
import weakref
from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtGui import QColor, QFontMetrics, QPainter, QPalette
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_pclesr._napari._background import CLOSE_WAIT_S
from napari_pclesr._napari._reader import ROLE_KEY

FOV_MASK_KEY = "fov_mask"
#: A status line shows at most this many lines; the rest is elided (full text in the tooltip).
STATUS_LINES = 3
#: The scrolling body never asks for more height than this (a line): five docks stacked one
#: above the other still fit an 800 px high screen.
BODY_MIN_HEIGHT = 20
#: Combo boxes are sized for this many characters, whatever the length of their items.
COMBO_CHARACTERS = 12
#: Width a dock asks for: with napari's layer list (~340 px) it leaves the canvas more than
#: half of a 1,280 px wide window. Users can still drag it wider.
DOCK_WIDTH = 270
#: A result is "worse than its input" when its SSIM is below the LR's by more than this (the
#: no-harm tolerance of the pretrained models' quality bar): a tie is not a warning.
WORSE_MARGIN = 0.005
LEVEL_COLOURS = {"info": None, "warning": "#e8a33d", "error": "#f0605a"}


# -- helpers ------------------------------------------------------------------------------------


def tip(control, text: str):
    """Give a magicgui widget or a QWidget its tooltip, on every part of it (a slider's number
    box too); returns the control (for inline use)."""
    if hasattr(control, "tooltip"):
        control.tooltip = text
    widget = native(control)
    for part in [widget, *widget.findChildren(QWidget)]:
        if not part.toolTip():
            part.setToolTip(text)
    return control


def make_room_in_thread_pool() -> None:
    """Let one more worker start at once in the thread pool napari's workers share.

    The pool holds as many threads as the machine has cores (2 on a small laptop). A
    training run keeps one for hours, an inference run another, so without room a quick job
    (scoring a frame, listing devices) would wait until they end.
    """
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    if pool.activeThreadCount() >= pool.maxThreadCount():
        pool.setMaxThreadCount(pool.activeThreadCount() + 1)


def set_choices(combo, choices: list) -> None:
    """Give a magicgui combo box a new fixed list of choices, kept when the dock refreshes
    its choices (magicgui would otherwise restore the list it was created with)."""
    combo.choices = lambda _widget: list(choices)


def native(control) -> QWidget:
    """The QWidget of a magicgui widget, or the widget itself."""
    return getattr(control, "native", control)


def device_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for a device combo box: ``auto`` first, then every device here.

    CUDA devices are labelled with the GPU's name, and ``auto`` with the device it picks, so
    the user sees at once whether a GPU will be used. Imports torch: call it off the UI thread.
    """
    import torch

    from napari_pclesr.devices import available_devices, select_device

    def label(name: str) -> str:
        if name.startswith("cuda"):
            return f"{name} ({torch.cuda.get_device_name(torch.device(name))})"
        return name

    return [(f"auto: {label(str(select_device('auto')))}", "auto")] + [
        (label(name), name) for name in available_devices()
    ]


def image_frames(layer, role: str) -> np.ndarray:
    """The data of a grey image layer as an array (H, W) or (T, H, W).

    Raises
    ------
    ValueError
        With a message for the user when no layer is chosen, or the layer is RGB, empty or
        has another number of dimensions.
    """
    if layer is None:
        raise ValueError(f"Pick the {role} image layer first (open an image or a sample).")
    if getattr(layer, "rgb", False):
        raise ValueError(
            f"Layer '{layer.name}' is RGB; the {role} image must be grey (convert it with "
            "Layers > Split RGB, or skimage.color.rgb2gray)."
        )
    data = layer.data
    shape = tuple(data.shape)
    if len(shape) not in (2, 3) or 0 in shape:
        raise ValueError(
            f"Layer '{layer.name}' has shape {shape}; the {role} image must be a frame (H, W) "
            "or a stack (T, H, W) with at least one pixel."
        )
    return data


def layer_fov_mask(layer, frame_shape) -> np.ndarray | None:
    """The layer's ``metadata["fov_mask"]`` if it is a boolean mask of the frame shape."""
    mask = layer.metadata.get(FOV_MASK_KEY)
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != tuple(frame_shape):
        return None
    return mask


def unwrapped(viewer):
    """The viewer itself: napari hands plugin docks a proxy, a new one for each dock."""
    return getattr(viewer, "__wrapped__", viewer)


def layer_role(layer) -> str | None:
    """A layer's part in the SR workflow: ``"hr"``, ``"lr"``, ``"sr"``, ``"raw"`` or None.

    From ``metadata["pclesr_role"]`` (set by our reader, samples and docks), else from what
    the metadata holds (an SR model, simulation parameters, a recording's format), else from
    the name's words ("HR", "HR-hat", "LR", "SR").
    """
    metadata = layer.metadata
    if metadata.get(ROLE_KEY):
        return metadata[ROLE_KEY]
    if metadata.get("sr_model"):
        return "sr"
    if metadata.get("simulator") is not None or metadata.get("format"):
        return "lr"
    words = set(re.split(r"[^a-z0-9]+", layer.name.lower()))
    for role in ("sr", "hr", "lr"):
        if role in words or f"{role}hat" in words:
            return role
    return None


def image_layer_choices(viewer) -> list[tuple[str, object]]:
    """(name, layer) of every grey-capable image layer, for a magicgui combo box."""
    from napari.layers import Image

    return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Image)]


def points_layer_choices(viewer) -> list[tuple[str, object]]:
    """(name, layer) of every Points layer (fibre layouts), for a magicgui combo box."""
    from napari.layers import Points

    return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Points)]


def pick_default(combo, viewer, roles: tuple[str, ...], exclude=()) -> None:
    """Select the most recent image layer with one of ``roles`` in ``combo`` when such a
    layer is new since the last call, or when nothing sensible is selected; a layer the user
    picked stays picked otherwise."""
    from napari.layers import Image

    seen = getattr(combo, "_pclesr_seen", set())
    layers = [layer for layer in viewer.layers if isinstance(layer, Image)]
    candidates = [
        layer
        for layer in layers
        if layer_role(layer) in roles and all(layer is not other for other in exclude)
    ]
    fresh = [layer for layer in candidates if id(layer) not in seen]
    current = combo.value
    current_fits = current is not None and any(current is layer for layer in candidates)
    if candidates and (fresh or not current_fits):
        combo.value = candidates[-1]
    combo._pclesr_seen = {id(layer) for layer in layers}


def add_or_update_image(viewer, name: str, data, **attributes):
    """Put ``data`` in the image layer ``name``, adding it if absent; returns the layer.

    Re-running a step updates its layer instead of stacking near-identical ones, so layer
    names stay short and stable ("LR (simulated)", "SR · fsrcnn").
    """
    metadata = attributes.pop("metadata", {})
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        layer.metadata.update(metadata)
        for key, value in attributes.items():
            setattr(layer, key, value)
        return layer
    return viewer.add_image(data, name=name, metadata=metadata, **attributes)


def ssim_in_fov(image, reference, mask) -> float:
    """SSIM of ``image`` against ``reference`` inside ``mask``, on the reference's intensity
    scale (data range: its span in the FoV); NaN when the FoV is too thin for one SSIM
    window. For a stack, the mean over the frames that have a score (HR-hat is NaN on
    rejected frames)."""
    from napari_pclesr.metrics import ssim

    inside = reference[..., mask]
    inside = inside[np.isfinite(inside)]
    span = float(inside.max() - inside.min()) if inside.size else 0.0
    try:
        scores = np.atleast_1d(ssim(image, reference, data_range=span or 1.0, mask=mask))
    except ValueError:
        return float("nan")
    finite = scores[np.isfinite(scores)]
    return float(finite.mean()) if finite.size else float("nan")


def percentile_limits(data, mask=None) -> tuple[float, float]:
    """Contrast limits at the 0.5 and 99.5 percentiles of the finite pixels inside ``mask``
    (all pixels when the mask is empty); (0, 1) when there is no finite pixel."""
    values = np.asarray(data)
    inside = values[..., mask] if mask is not None else values
    inside = inside if inside.size else values
    inside = inside[np.isfinite(inside)]
    if not inside.size:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(inside, (0.5, 99.5)))
    return low, high if high > low else low + 1.0


# -- building blocks ----------------------------------------------------------------------------


class StatusLine(QWidget):
    """A status message that wraps to the dock's width and never widens the dock.

    Words wrap; a word longer than a line (a file path) is broken anywhere. Past
    :data:`STATUS_LINES` lines the text is elided with "…"; the tooltip always holds the full
    message. Warnings and errors are coloured.
    """

    def __init__(self, max_lines: int = STATUS_LINES, parent: QWidget | None = None):
        super().__init__(parent)
        self.max_lines = max_lines
        self._message = ""
        self.level = "info"
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        self._fit_height()

    @property
    def message(self) -> str:
        """The full message (the widget may show it elided)."""
        return self._message

    def text(self) -> str:
        """The full message (QLabel-like)."""
        return self._message

    def set_message(self, message: str, level: str = "info") -> None:
        """Show ``message``; ``level`` is ``"info"``, ``"warning"`` or ``"error"``."""
        self._message = str(message)
        self.level = level
        self.setToolTip(self._message)
        self._fit_height()
        self.update()

    def lines(self, width: int | None = None) -> list[str]:
        """The lines shown at ``width`` pixels (the current width by default)."""
        width = max(20, self.width() if width is None else width)
        return wrap_text(self._message, QFontMetrics(self.font()), width, self.max_lines)

    def is_elided(self) -> bool:
        """Whether the shown lines leave part of the message out."""
        return "".join(self.lines()).replace(" ", "") != self._message.replace(" ", "").replace(
            "\n", ""
        )

    def _fit_height(self) -> None:
        count = max(1, len(self.lines()))
        self.setFixedHeight(count * QFontMetrics(self.font()).lineSpacing() + 2)

    def sizeHint(self) -> QSize:
        return QSize(120, self.height())

    def minimumSizeHint(self) -> QSize:
        return QSize(20, QFontMetrics(self.font()).lineSpacing() + 2)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_height()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        colour = LEVEL_COLOURS.get(self.level)
        painter.setPen(QColor(colour) if colour else self.palette().color(QPalette.WindowText))
        metrics = painter.fontMetrics()
        for index, line in enumerate(self.lines()):
            painter.drawText(0, index * metrics.lineSpacing() + metrics.ascent() + 1, line)


def wrap_text(text: str, metrics: QFontMetrics, width: int, max_lines: int) -> list[str]:
    """Break ``text`` into lines of at most ``width`` pixels, at most ``max_lines`` of them.

    Words wrap at spaces and paragraphs at newlines; a word wider than a line is cut where it
    fills one. If more lines are needed, the last one shown ends with "…".
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if metrics.horizontalAdvance(candidate) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            while len(word) > 1 and metrics.horizontalAdvance(word) > width:
                cut = _fitting_prefix(word, metrics, width)
                lines.append(word[:cut])
                word = word[cut:]
            current = word
        lines.append(current)
    if len(lines) > max_lines:
        rest = " ".join(lines[max_lines - 1 :])
        lines = [*lines[: max_lines - 1], metrics.elidedText(rest, Qt.ElideRight, width)]
    return lines


def _fitting_prefix(word: str, metrics: QFontMetrics, width: int) -> int:
    """The length of the longest prefix of ``word`` that fits ``width`` (at least 1)."""
    low, high = 1, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if metrics.horizontalAdvance(word[:middle]) <= width:
            low = middle
        else:
            high = middle - 1
    return low


class Form(QWidget):
    """Labelled rows of controls, each label above its control (a narrow dock has no room
    beside it); labels wrap and carry the control's tooltip. :meth:`set_row_visible` hides a
    whole row."""

    def __init__(self, controls=(), parent: QWidget | None = None):
        super().__init__(parent)
        self._layout = QFormLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setRowWrapPolicy(QFormLayout.WrapAllRows)
        self._layout.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self._labels: dict[int, QLabel] = {}
        for control in controls:
            self.add(control)

    def add(self, control, label: str | None = None) -> None:
        """Add a row: ``label`` (by default the magicgui widget's label) and the control."""
        field = native(control)
        fit_narrow(field)
        text = label if label is not None else _label_text(control)
        if not text:
            self._layout.addRow(field)
            return
        label_widget = QLabel(text)
        label_widget.setWordWrap(True)
        label_widget.setToolTip(field.toolTip())
        label_widget.setBuddy(field)
        self._labels[id(field)] = label_widget
        self._layout.addRow(label_widget, field)

    def set_row_visible(self, control, visible: bool) -> None:
        """Show or hide a control together with its label."""
        field = native(control)
        field.setVisible(visible)
        if id(field) in self._labels:
            self._labels[id(field)].setVisible(visible)

    def holds(self, control) -> bool:
        """Whether ``control`` is one of this form's rows."""
        return native(control).parent() is self


def _label_text(control) -> str:
    # Check boxes and buttons show their own text; a row label would repeat it.
    if hasattr(control, "text") and type(control).__name__ in ("CheckBox", "PushButton"):
        return ""
    return getattr(control, "label", "") or ""


def fit_narrow(widget: QWidget) -> None:
    """Keep ``widget`` (and the combo boxes inside it) from widening the dock."""
    for combo in [widget, *widget.findChildren(QComboBox)]:
        if isinstance(combo, QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(COMBO_CHARACTERS)
    policy = widget.sizePolicy()
    if policy.horizontalPolicy() in (QSizePolicy.Fixed, QSizePolicy.Minimum):
        policy.setHorizontalPolicy(QSizePolicy.Preferred)
        widget.setSizePolicy(policy)


def button_row(*buttons) -> QWidget:
    """Buttons (magicgui or Qt) side by side, sharing the width equally."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(4)
    for button in buttons:
        widget = native(button)
        widget.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        widget.setMinimumWidth(40)
        layout.addWidget(widget)
    return row


class Collapsible(QWidget):
    """A section whose content shows or hides with a click on its title (collapsed at first)."""

    def __init__(self, title: str, content: QWidget, expanded: bool = False, parent=None):
        super().__init__(parent)
        self.content = content
        self.button = QToolButton()
        self.button.setText(title)
        self.button.setCheckable(True)
        self.button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.button.setAutoRaise(True)
        self.button.setToolTip(f"Show or hide the {title.lower()} settings.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.button)
        layout.addWidget(content)
        self.button.toggled.connect(self.set_expanded)
        self.set_expanded(expanded)

    def set_expanded(self, expanded: bool) -> None:
        """Show (True) or hide the content."""
        self.button.setChecked(expanded)
        self.button.setArrowType(Qt.DownArrow if expanded else Qt.RightArrow)
        self.content.setVisible(expanded)


# -- the dock -----------------------------------------------------------------------------------


class PclesrDock(QWidget):
    """Base of the plugin's docks: layout pieces, status, workers and lifecycle.

    Subclasses build their controls with :meth:`add_rows`, :meth:`add_advanced`,
    :meth:`add_actions` and :meth:`add_footer`, start work with :meth:`start_worker`, and
    override :meth:`_request_stop` when *Stop* means more than quitting the worker (it must
    not touch widgets: it also runs while the dock is being deleted).

    Attributes
    ----------
    title : str
        The dock's name, as its notifications begin (a class attribute).
    viewer : napari.Viewer
    worker : napari worker or None
        The running job, if any (the one *Stop* ends).
    closed : bool
        The dock was closed (or its viewer): its widgets must not be touched any more.
    status : StatusLine
    """

    title = ""
    #: What the status line says when Stop is pressed ("" for nothing).
    stopping_message = ""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.closed = False
        self._last_notified = ""
        self._listening: list[tuple[object, Callable]] = []
        self._controls: list = []
        self._forms: list[Form] = []
        self._running: dict[object, threading.Event] = {}
        # Weak: a closed dock kept by a script must not keep napari's window alive.
        self._dock_widget_ref = _no_object
        self._window_ref = _no_object
        self._shown_once = False
        self.ready = True

        self._body = QWidget()
        self._body_layout = QVBoxLayout(self._body)
        self._body_layout.setContentsMargins(4, 4, 4, 4)
        self._body_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        scroll.setWidget(self._body)
        scroll.setMinimumHeight(BODY_MIN_HEIGHT)
        self.scroll_area = scroll
        self.status = StatusLine()
        self._footer = QVBoxLayout()
        self._footer.setContentsMargins(4, 2, 4, 4)
        self._footer.setSpacing(3)
        self._footer.addWidget(self.status)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(scroll, stretch=1)
        outer.addLayout(self._footer)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)  # no added stretch
        self._watcher_filter = _DockWatcher(self)
        self.installEventFilter(self._watcher_filter)
        # Not a bound method: Qt would not call one of an object it is deleting.
        self.destroyed.connect(functools.partial(_on_destroyed, weakref.ref(self)))

    def sizeHint(self) -> QSize:
        return QSize(DOCK_WIDTH, super().sizeHint().height())

    # -- building -------------------------------------------------------------------------------

    def add_widget(self, widget: QWidget, stretch: int = 0) -> QWidget:
        """Add any widget to the scrolling body (below what is there); one with a stretch
        (a plot, a table) takes the body's spare height."""
        last = self._body_layout.count() - 1  # the stretch keeping rows at the top
        self._body_layout.insertWidget(last, widget, stretch)
        if stretch:
            self._body_layout.setStretch(last + 1, 0)
        return widget

    def add_rows(self, controls) -> Form:
        """Add labelled rows of controls (magicgui widgets or QWidgets) to the body."""
        form = Form(controls)
        self._register(form, controls)
        self.add_widget(form)
        return form

    def add_advanced(self, controls, title: str = "Advanced", expanded: bool = False):
        """Add rows inside a collapsible section (collapsed by default); returns it."""
        form = Form(controls)
        self._register(form, controls)
        section = Collapsible(title, form, expanded)
        self.add_widget(section)
        return section

    def add_actions(self, *buttons) -> list:
        """Add a row of buttons (magicgui or Qt) to the footer, which always stays in view."""
        self._footer.insertWidget(self._footer.count() - 1, button_row(*buttons))
        self._controls.extend(buttons)
        return list(buttons)

    def add_footer(self, control):
        """Add a widget (a progress bar, say) to the footer, above the status line."""
        widget = native(control)
        fit_narrow(widget)
        self._footer.insertWidget(self._footer.count() - 1, widget)
        self._controls.append(control)
        return control

    def _register(self, form: Form, controls) -> None:
        self._forms.append(form)
        self._controls.extend(controls)

    def set_row_visible(self, control, visible: bool) -> None:
        """Show or hide a control of the body and its label."""
        for form in self._forms:
            if form.holds(control):
                form.set_row_visible(control, visible)
                return
        native(control).setVisible(visible)

    def follow_layers(self, callback: Callable | None = None) -> None:
        """Call ``callback`` (by default :meth:`refresh_choices`) whenever a layer is added,
        removed or moved, until the dock closes."""
        for event in ("inserted", "removed", "reordered"):
            self.listen(getattr(self.viewer.layers.events, event), callback or self.refresh_choices)

    def _image_choices(self, _widget=None):
        """The viewer's image layers, as ``choices`` of a magicgui combo box."""
        return image_layer_choices(self.viewer)

    def refresh_choices(self, *_event) -> None:
        """Refresh the items of every choice control (e.g. after layers changed)."""
        for control in self._controls:
            if hasattr(control, "reset_choices"):
                control.reset_choices()

    # -- messages -------------------------------------------------------------------------------

    def report(self, message: str, level: str = "info") -> None:
        """Show ``message`` in the status line; a warning or an error also becomes a napari
        notification with the full text."""
        if self.closed:
            return
        self.status.set_message(message, level)
        if level in ("warning", "error"):
            self.notify(message, level)

    def notify(self, message: str, level: str = "info") -> None:
        """A napari notification naming the dock; a message repeated at once is not notified
        again (the status line still shows it)."""
        if self.closed or message == self._last_notified:
            return
        from napari.utils.notifications import show_error, show_info, show_warning

        self._last_notified = message
        show = {"info": show_info, "warning": show_warning, "error": show_error}[level]
        show(f"{self.title}: {message}" if self.title else message)

    # -- viewer events --------------------------------------------------------------------------

    def listen(self, emitter, callback: Callable) -> None:
        """Connect ``callback`` to a viewer (or layer) event until the dock closes."""
        emitter.connect(callback)
        self._listening.append((emitter, callback))

    def forget(self, emitter, callback: Callable) -> None:
        """Disconnect one connection made with :meth:`listen`."""
        if (emitter, callback) in self._listening:
            self._listening.remove((emitter, callback))
            emitter.disconnect(callback)

    def _disconnect_all(self) -> None:
        for emitter, callback in self._listening:
            # An emitter whose object is gone already raises; there is nothing to undo then.
            with contextlib.suppress(RuntimeError, TypeError, ValueError):
                emitter.disconnect(callback)
        self._listening.clear()

    # -- workers --------------------------------------------------------------------------------

    def start_worker(
        self,
        function: Callable,
        *args,
        job: bool = True,
        yielded: Callable | None = None,
        returned: Callable | None = None,
        errored: Callable | None = None,
        aborted: Callable | None = None,
        finished: Callable | None = None,
        **kwargs,
    ):
        """Run ``function(*args, **kwargs)`` (a generator function yields progress) in a
        napari worker thread; returns the started worker.

        The handlers run in the UI thread, and never after the dock has closed. ``job``
        makes the worker :attr:`worker`, the one *Stop* ends; other workers (quick look-ups)
        are only waited for when the viewer closes. Errors go to ``errored`` only.
        """
        from napari.qt.threading import thread_worker

        done = threading.Event()
        run = None
        if inspect.isgeneratorfunction(function):
            run = function(*args, **kwargs)

            def body():
                try:
                    return (yield from run)
                finally:
                    done.set()

        else:

            def body():
                try:
                    return function(*args, **kwargs)
                finally:
                    done.set()

        worker = thread_worker(body, ignore_errors=True)()
        if run is not None:
            # A quit worker (Stop, or napari closing) stops iterating without closing the
            # generator: close it in the worker thread, so its clean-up (a training run's
            # last.pt) happens now rather than whenever it is garbage-collected.
            worker.aborted.connect(
                functools.partial(_close_generator, run, done), Qt.ConnectionType.DirectConnection
            )
        make_room_in_thread_pool()
        for signal, handler in (
            ("yielded", yielded),
            ("returned", returned),
            ("errored", errored),
            ("aborted", aborted),
        ):
            if handler is not None and hasattr(worker, signal):
                getattr(worker, signal).connect(self._guarded(handler))
        worker.finished.connect(functools.partial(self._on_worker_finished, worker, finished))
        self._running[worker] = done
        if job:
            self.worker = worker
        worker.start()
        return worker

    def load_in_background(self, load: Callable, apply: Callable, controls=()) -> None:
        """Run ``load()`` in a worker and hand its result to ``apply`` in the UI thread.

        For what needs torch (devices, model and baseline lists): importing it takes seconds
        the first time, which must not freeze the viewer while the dock opens. ``controls``
        stay disabled until then; :attr:`ready` tells when it is done.
        """
        self.ready = False
        for control in controls:
            control.enabled = False
        previous = self.status.message
        self.report("Loading PyTorch…")

        def done(result) -> None:
            for control in controls:
                control.enabled = True
            self.ready = True
            apply(result)
            if self.status.message == "Loading PyTorch…":
                self.report(previous)

        def failed(error: Exception) -> None:
            self.report(f"PyTorch could not be loaded: {error}", "error")

        self.start_worker(load, job=False, returned=done, errored=failed)

    def _guarded(self, handler: Callable) -> Callable:
        def call(*args):
            if not self.closed:
                handler(*args)

        return call

    def _on_worker_finished(self, worker, handler: Callable | None) -> None:
        self._running.pop(worker, None)
        if worker is self.worker:
            self.worker = None
        if handler is not None and not self.closed:
            handler()

    def start_job(self, function: Callable, job: dict, total: int, message: str):
        """Start the dock's main job, ``function(job)``, in a worker: *Run* off, *Stop* on,
        the progress bar at 0 of ``total`` and ``message`` shown. The dock's ``_run``,
        ``_stop`` and ``_progress`` controls and its ``_on_progress``, ``_on_result``,
        ``_on_error``, ``_on_aborted`` and ``_on_finished`` handlers take part."""
        self._run.enabled, self._stop.enabled = False, True
        self._progress.max, self._progress.value = max(total, 1), 0
        self.report(message)
        return self.start_worker(
            function,
            job,
            yielded=self._on_progress,
            returned=self._on_result,
            errored=self._on_error,
            aborted=self._on_aborted,
            finished=self._on_finished,
        )

    def stop(self) -> None:
        """Ask the running job to stop (what the Stop button does) and say so."""
        if self.worker is not None:
            self._request_stop()
            if self.stopping_message:
                self.report(self.stopping_message)

    def _request_stop(self) -> None:
        """End the job. Must not touch widgets: it also runs while the dock is deleted."""
        self.worker.quit()

    def wait_for_workers(self, timeout_s: float = CLOSE_WAIT_S) -> bool:
        """Block until every worker of the dock has ended, at most ``timeout_s``; returns
        whether they all did."""
        deadline = time.monotonic() + timeout_s
        for done in list(self._running.values()):
            if not done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    # -- lifecycle ------------------------------------------------------------------------------

    def _on_hidden(self) -> None:
        """The user hid the dock (its title bar's hide button): stop the job."""
        if self.worker is not None and not self.closed:
            self.stop()
            self.report(f"{self._stop_note()} because the dock was hidden.", "warning")

    def _stop_note(self) -> str:
        """How a stopped job ends, for messages ("Stopped", "Stopping; last.pt is kept")."""
        return "Stopped"

    def close_dock(self, wait: bool = False) -> None:
        """Stop the job, disconnect every viewer event and drop later worker signals.

        ``wait`` blocks (at most :data:`CLOSE_WAIT_S`) until the workers have ended, as when
        the viewer closes: nothing then runs after the window is gone.
        """
        if self.closed:
            return
        if self.worker is not None:
            self._request_stop()
        self.closed = True
        self._disconnect_all()
        if wait:
            self.wait_for_workers()

    @property
    def _dock_widget(self) -> QDockWidget | None:
        return self._dock_widget_ref()

    @property
    def _watched_window(self) -> QMainWindow | None:
        return self._window_ref()

    def _on_parent_changed(self) -> None:
        parent = self.parentWidget()
        if isinstance(parent, QDockWidget):
            self._dock_widget_ref = weakref.ref(parent)
            parent.installEventFilter(self._watcher_filter)
            self._watch_window()
        elif parent is None and self._dock_widget is not None:
            # napari's close button (×) removes the dock and unparents its content.
            self._dock_widget_ref = _no_object
            self.close_dock()
            self.deleteLater()

    def _watch_window(self) -> None:
        """Watch the main window the dock lives in, to stop work when it closes."""
        dock = self._dock_widget
        window = dock.parentWidget() if dock is not None else None
        if isinstance(window, QMainWindow) and window is not self._watched_window:
            self._window_ref = weakref.ref(window)
            window.installEventFilter(self._watcher_filter)

    def _on_first_show(self) -> None:
        self._watch_window()
        window, dock = self._watched_window, self._dock_widget
        if window is not None and dock is not None:
            tabify_with_siblings(window, dock)

    def _on_window_close(self, event) -> None:
        if event.spontaneous():
            # The user closed the window: napari may still ask for confirmation, so act once
            # the close went through (the window is then hidden or deleted).
            QTimer.singleShot(0, self._close_if_window_gone)
        else:
            self.close_dock(wait=True)

    def _close_if_window_gone(self) -> None:
        window = self._watched_window
        try:
            gone = window is None or not window.isVisible()
        except RuntimeError:  # deleted
            gone = True
        if gone:
            self.close_dock(wait=True)


def _no_object() -> None:
    """A dead weak reference: what the dock holds before it is docked."""


def _on_destroyed(reference: weakref.ref, _object=None) -> None:
    """The dock's widgets are being deleted (its viewer closed): stop the job, drop signals."""
    dock = reference()
    if dock is not None and not dock.closed:
        dock.closed = True
        if dock.worker is not None:
            dock._request_stop()
        dock._disconnect_all()


class _DockWatcher(QObject):
    """Event filter telling a dock when it is docked, shown, hidden, removed or its window
    closes."""

    def __init__(self, dock: PclesrDock):
        super().__init__(dock)

    def eventFilter(self, watched, event) -> bool:
        dock = self.parent()
        kind = event.type()
        if watched is dock:
            if kind == QEvent.ParentChange:
                dock._on_parent_changed()
            elif kind == QEvent.Show and not dock._shown_once:
                dock._shown_once = True
                dock._on_first_show()
        elif isinstance(watched, QDockWidget):
            if kind == QEvent.Hide and watched.isHidden():  # hidden by the user, not a tab
                dock._on_hidden()
            elif kind == QEvent.ParentChange:
                dock._watch_window()
        elif kind == QEvent.Close:
            dock._on_window_close(event)
        return False


def tabify_with_siblings(window: QMainWindow, dock_widget: QDockWidget) -> None:
    """Make a newly shown plugin dock a tab of the plugin docks already in its area, so each
    gets the full height (a small screen cannot stack four docks)."""
    area = window.dockWidgetArea(dock_widget)
    siblings = [
        other
        for other in window.findChildren(QDockWidget)
        if other is not dock_widget
        and isinstance(other.widget(), PclesrDock)
        and not other.isHidden()
        and not other.isFloating()
        and window.dockWidgetArea(other) == area
    ]
    if siblings and not dock_widget.isFloating():
        window.tabifyDockWidget(siblings[0], dock_widget)
        dock_widget.show()
        dock_widget.raise_()


def _close_generator(generator, done: threading.Event) -> None:
    """Close a worker's generator (in the worker thread) and mark the worker done."""
    try:
        generator.close()
    finally:
        done.set()
