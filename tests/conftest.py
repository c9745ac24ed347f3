"""Shared fixtures: real data from ../shared/data, skipped with a message when it is absent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SLIDES = SHARED_DATA / "slides"
MONUSEG = SHARED_DATA / "monuseg-train"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared test data at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def cmu_slide() -> Path:
    """OpenSlide's CMU-1-Small-Region.svs: 2220 x 2967 px at 0.499 um/px, one level."""
    return _require(SLIDES / "CMU-1-Small-Region.svs")


@pytest.fixture(scope="session")
def tcga_slide() -> Path:
    """A pyramidal TCGA H&E SVS (4443 x 3567 px, 2 levels) with no mpp in its metadata."""
    return _require(SLIDES / "TCGA-CR-7395-01A-01-TS1.svs")


@pytest.fixture(scope="session")
def monuseg_dir() -> Path:
    """30 MoNuSeg H&E crops (images/NAME.png) with nuclei masks (masks/NAME.png, 255 = nucleus)."""
    return _require(MONUSEG)


@pytest.fixture(scope="session")
def monuseg_pair(monuseg_dir: Path) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``monuseg_pair(i)``: (RGB uint8, bool nucleus mask) of the i-th MoNuSeg image by name."""

    def load(index: int) -> tuple[np.ndarray, np.ndarray]:
        path = sorted((monuseg_dir / "images").glob("*.png"))[index]
        mask = np.asarray(Image.open(monuseg_dir / "masks" / path.name)) > 127
        return np.asarray(Image.open(path).convert("RGB")), mask if mask.ndim == 2 else mask[..., 0]

    return load
