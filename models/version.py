"""PetSeg's version, read from the installed distribution's metadata (setup.cfg sets it)."""

from __future__ import annotations

from importlib import metadata


def _installed_version() -> str:
    """The ``petseg`` distribution's version, or ``"unknown"`` in a source tree never installed."""
    try:
        return metadata.version("petseg")
    except metadata.PackageNotFoundError:
        return "unknown"


__version__ = _installed_version()
