"""Fifth attack on issue 13: a slide's exports were built as many at once as a viewer asked for.
A slide of 134,091 imported cells exported with ``?dissolve=false`` holds 360 MB above the API
process for 16 s; four parallel requests of one viewer took it from 781 MB to 1,838 MB (ten would
ask for 3.6 GB), and four GET .../labels?user=all of 217,000 labels took it from 875 to 2,504 MB.
Now at most ``EXPORTERS`` build at once per process; one that waits past ``EXPORT_WAIT_S`` is a
503."""

from __future__ import annotations

import asyncio

import pytest
from conftest import every_export_turn_taken

from slidelabel.services import exports
from slidelabel.store.models import Role


def test_exports_build_at_most_exporters_at_once():
    running, most = [0], [0]

    async def export(holder: int) -> None:
        async with exports.export_turn_waiting(holder):
            running[0] += 1
            most[0] = max(most[0], running[0])
            await asyncio.sleep(0.1)
            running[0] -= 1

    async def run() -> None:
        await asyncio.gather(*(export(holder) for holder in range(2 * exports.EXPORTERS + 1)))

    asyncio.run(run())
    assert most[0] == exports.EXPORTERS


@pytest.mark.parametrize("path", ["slides/{slide}/export/geojson?dissolve=false", "slides/{slide}/export/annotation",
                                  "export/geojson.zip", "slides/{slide}/labels?user=all"])
def test_an_export_that_waits_too_long_is_busy_and_the_route_says_503(
        path, monkeypatch, client, member_headers, project, slide_row):
    monkeypatch.setattr(exports, "EXPORT_WAIT_S", 0.05)
    with every_export_turn_taken():  # others' exports build
        response = client.get(f"/api/v1/projects/{project['id']}/{path.format(slide=slide_row)}",
                              headers=member_headers(Role.viewer))
    assert response.status_code == 503, response.text
    assert "busy" in response.json()["detail"]
