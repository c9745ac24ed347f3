"""Third attack on issue 13: a cohort slide's download URLs carried its file stem unescaped, so a
slide named ``case #1?.tiff`` was listed with links that cut at '#' or '?' and opened nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from slidelabel.services import job_runs
from test_cohort_jobs import run_sent, url
from test_epochs import annotator, cmu_files, rule, slide_id, trained  # noqa: F401  (fixtures)
from tissue_slides import write_tissue_slide


def test_download_links_of_a_slide_named_with_url_characters_open_its_files(
        app, client, project, admin_headers, trained, sender, settings, monuseg_dir: Path, tmp_path):  # noqa: F811
    folder = settings.slide_folders[0] / "odd"
    folder.mkdir(parents=True)
    write_tissue_slide(folder / "case #1?.tiff", monuseg_dir, rows=1, cols=2, first=0)
    response = client.post(url(project, "/epochs/1/cohort"), headers=admin_headers, json={"folder": str(folder)})
    assert response.status_code == 202, response.text
    start = len(sender.sent)
    job_runs.run(app.state.database, app.state.settings, response.json()["id"], sender=sender)
    run_sent(app, sender, start)

    cohort = client.get(url(project, f"/cohorts/{response.json()['id']}"), headers=admin_headers).json()
    [found] = cohort["slides"]
    assert found["name"] == "case #1?" and found["job"]["state"] == "done", found["job"]["message"]
    mask = client.get(found["downloads"]["mask"], headers=admin_headers)
    assert mask.status_code == 200, (found["downloads"]["mask"], mask.text)
    (tmp_path / "mask.tiff").write_bytes(mask.content)
    assert np.unique(tifffile.imread(tmp_path / "mask.tiff")).size >= 1
