"""Datasets for jobs are named relative to one configured data root; nothing outside it may be read."""

from __future__ import annotations

from pathlib import Path

from sarm_gateway.errors import InvalidInput


class OutsideDataRoot(InvalidInput):
    """The requested path leaves the data root (.., an absolute path elsewhere, or a symlink out)."""


def dataset_dir(root: Path, requested: str) -> Path:
    """The dataset folder `requested` names under `root`, after following every symlink; OutsideDataRoot if that
    lands outside the root, InvalidInput if there is no folder there."""
    if not requested.strip() or "\x00" in requested:
        raise InvalidInput("dataset is empty: give a dataset folder relative to the data root, e.g. 'pick-place'")
    base = root.resolve()
    candidate = (base / requested).resolve()  # an absolute `requested` replaces the base; resolve() follows links
    if not candidate.is_relative_to(base):
        raise OutsideDataRoot(
            f"dataset {requested!r} is outside the data root (SARM_DATA_ROOT): name a folder "
            "relative to it, without '..'"
        )
    if not candidate.is_dir():
        raise InvalidInput(f"no dataset folder {requested!r} under the data root (SARM_DATA_ROOT)")
    return candidate
