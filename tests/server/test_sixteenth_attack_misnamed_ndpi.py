"""An SVS uploaded as x.ndpi is a 422 that says the file is no NDPI (sixteenth attack: its
smallest level was "2967 x 4121488756551188481 px")."""

from __future__ import annotations


def test_an_svs_uploaded_as_ndpi_is_a_422_saying_so(client, admin_headers, project, cmu_slide):
    response = client.post(f"/api/v1/projects/{project['id']}/slides/upload", headers=admin_headers,
                           files={"file": ("x.ndpi", cmu_slide.read_bytes(), "image/tiff")})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("x.ndpi: is named .ndpi but is no Hamamatsu NDPI file"), response.text
    assert "4121488756551188481" not in response.text
