"""Before Qt starts: can its platform plugin load?  On a bare Debian/Ubuntu line PC the
xcb plugin needs X libraries that are not installed by default (``libxcb-cursor0``
first of all); Qt then aborts with a message that names no package.  We try to load
the plugin ourselves and, if that fails, say which packages to install."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from pathlib import Path

# What Qt 6's xcb platform needs on Debian/Ubuntu beyond a minimal desktop (also in the README).
XCB_PACKAGES = ("libxcb-cursor0", "libxkbcommon-x11-0", "libxcb-icccm4", "libxcb-image0", "libxcb-keysyms1",
                "libxcb-randr0", "libxcb-render-util0", "libxcb-shape0", "libxcb-xinerama0", "libxcb-xkb1",
                "libegl1", "libgl1", "libfontconfig1", "libdbus-1-3")
INSTALL_HINT = "sudo apt-get install " + " ".join(XCB_PACKAGES)


def plugin_dir(environ: Mapping[str, str]) -> Path:
    """Where Qt looks for platform plugins (``QT_QPA_PLATFORM_PLUGIN_PATH`` first)."""
    if environ.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        return Path(environ["QT_QPA_PLATFORM_PLUGIN_PATH"])
    import PySide6

    return Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms"


def platform_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why Qt's xcb platform would fail to start here, or None when it should work
    (or another platform such as offscreen or wayland is used)."""
    if not sys.platform.startswith("linux"):
        return None
    platform = environ.get("QT_QPA_PLATFORM", "")
    if not (platform.startswith("xcb") or (not platform and not environ.get("WAYLAND_DISPLAY"))):
        return None
    if not environ.get("DISPLAY"):
        return "there is no display ($DISPLAY is not set): start the review app on the line PC's desktop"
    plugin = plugin_dir(environ) / "libqxcb.so"
    if not plugin.is_file():
        return None  # an unusual Qt layout: let Qt speak for itself
    try:
        ctypes.CDLL(str(plugin))
    except OSError as exc:
        return f"Qt's xcb platform plugin cannot be loaded: {exc}"
    return None


def hint(problem: str) -> str:
    return (f"inspectd-gui: error: {problem}\n"
            f"The review app needs these system packages (Debian/Ubuntu):\n  {INSTALL_HINT}\n"
            "See 'Installing the review app' in the README.")
