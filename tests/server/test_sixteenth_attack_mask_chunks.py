"""An uploaded label mask is held to the server's SLIDELABEL_MAX_DECODED_MB, judged from its
headers before the import job decodes a pixel (sixteenth attack: a 4.35 MB mask of one 32768 px
tile was accepted and took 4.47 GB of the worker)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import ADMIN_PASSWORD

from slidelabel.services import job_runs
from slidelabel.settings import Settings
from slidelabel.store.models import Job, JobState, Slide


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The tests' settings with a 1 MB limit on a decoded strip or tile."""
    slide_folder = tmp_path / "slides"
    slide_folder.mkdir()
    return Settings(data_dir=tmp_path / "data", db=database_url, broker="memory://", slide_folders=[slide_folder],
                    admin_password=ADMIN_PASSWORD, max_decoded_mb=1)


def mask_tiff(tile: int) -> bytes:
    """A two-segment uint32 label mask of the CMU slide in ``tile`` px zlib tiles."""
    mask = np.zeros((2967, 2220), np.uint32)
    mask[:1000, :1000], mask[1000:, 1000:] = 1, 2
    out = io.BytesIO()
    tifffile.imwrite(out, mask, tile=(tile, tile), compression="zlib")
    return out.getvalue()


def test_a_mask_in_tiles_past_the_servers_limit_fails_its_job_with_what_to_do(app, client, sender, admin_headers,
                                                                               project, cmu_slide):
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name=cmu_slide.name, path=str(cmu_slide), width=2220, height=2967,
                      mpp=0.499)
        session.add(slide)
        session.flush()
        slide_id = slide.id
    response = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_id}/segments", headers=admin_headers,
                           files={"file": ("mask.tif", mask_tiff(1024), "image/tiff")})
    assert response.status_code == 202, response.text
    job_runs.run(app.state.database, app.state.settings, response.json()["id"])
    with app.state.database.session() as session:
        job = session.get(Job, response.json()["id"])
        assert job.state == JobState.failed, job.message
        assert job.message.startswith(
            "mask.tif stores its 2220 x 2967 px image in tiles of 4 MB decoded each, more than the 1 MB this server "
            "decodes at once (SLIDELABEL_MAX_DECODED_MB): write it tiled, e.g. in 512 x 512 px tiles"), job.message
        assert session.get(Slide, slide_id).superpixels is None
