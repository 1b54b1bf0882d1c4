"""What the plugin's manifest (``napari.yaml``) declares, read without importing Qt."""

from __future__ import annotations

from importlib import resources


def dock_titles() -> tuple[str, ...]:
    """The titles of the plugin's docks, in the order of its manifest: the names
    ``viewer.window.add_plugin_dock_widget("napari-pclesr", NAME)`` accepts."""
    from npe2 import PluginManifest

    with resources.as_file(resources.files("napari_pclesr") / "napari.yaml") as path:
        manifest = PluginManifest.from_file(path)
    return tuple(widget.display_name for widget in manifest.contributions.widgets)
