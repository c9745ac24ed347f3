"""Where the dense files of projects live under the data folder.

::

    <data>/projects/<project>/
        slides/<slide>/superpixels/      labels.tiff, superpixels.parquet, manifest.json
        slides/<slide>/features/<extractor>.zarr
        epochs/<n>/model.zip             the trained model of epoch n
        epochs/<n>/slides/<slide>.npz    its predictions for one slide
        epochs/<n>/ranking.npz           the project-wide ranking of unlabelled superpixels
    <data>/uploads/<project>/<name>      uploaded slide files

Folders are named by database ids, never by user-given names, so no name can reach outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectFiles:
    """Paths of one project's files; nothing is created until written."""

    data_dir: Path
    project_id: int

    @property
    def root(self) -> Path:
        return self.data_dir / "projects" / str(self.project_id)

    @property
    def uploads(self) -> Path:
        return self.data_dir / "uploads" / str(self.project_id)

    def slide_dir(self, slide_id: int) -> Path:
        return self.root / "slides" / str(slide_id)

    def superpixels(self, slide_id: int) -> Path:
        return self.slide_dir(slide_id) / "superpixels"

    def features(self, slide_id: int, extractor: str) -> Path:
        return self.slide_dir(slide_id) / "features" / f"{extractor}.zarr"

    def epoch_dir(self, number: int) -> Path:
        return self.root / "epochs" / str(number)

    def model(self, number: int) -> Path:
        return self.epoch_dir(number) / "model.zip"

    def predictions(self, number: int, slide_id: int) -> Path:
        return self.epoch_dir(number) / "slides" / f"{slide_id}.npz"

    def ranking(self, number: int) -> Path:
        return self.epoch_dir(number) / "ranking.npz"
