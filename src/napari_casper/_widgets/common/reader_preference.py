"""napari's reader preferences for napari-casper (``napari-casper default-reader``).

napari matches a folder's path with a trailing slash against the patterns of Preferences > Plugins >
File extension readers; ``*.zarr/`` makes napari-casper the reader of every ``.zarr`` store.
"""

from __future__ import annotations

#: the reader preference patterns this command sets (napari matches a folder's path with a trailing slash)
PATTERNS = ("*.zarr/", "*.h5ad")
PLUGIN = "napari-casper"


def set_default_reader(undo: bool = False) -> tuple[dict[str, str], object]:
    """Add (or with ``undo`` remove) napari-casper as napari's reader for :data:`PATTERNS`; returns the
    reader preferences and the settings file they were saved to."""
    from napari.settings import get_settings

    settings = get_settings()
    preferences = dict(settings.plugins.extension2reader)
    for pattern in PATTERNS:
        if undo:
            if preferences.get(pattern) == PLUGIN:
                del preferences[pattern]
        else:
            preferences[pattern] = PLUGIN
    settings.plugins.extension2reader = preferences
    settings.save()
    return preferences, settings.config_path
