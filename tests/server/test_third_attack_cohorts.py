"""Third attack on issue 13: the cohort list took any ``limit``, so ``limit=-1`` listed every
cohort of the project in one answer (the job list had been bounded to 1-1000 before)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("limit", ["-1", "0", "1001", "100000000"])
def test_the_cohort_list_refuses_a_limit_outside_1_to_1000(client, admin_headers, project, limit):
    response = client.get(f"/api/v1/projects/{project['id']}/cohorts", params={"limit": limit}, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert "limit" in response.text


def test_the_cohort_list_takes_a_limit_within_range(client, admin_headers, project):
    response = client.get(f"/api/v1/projects/{project['id']}/cohorts", params={"limit": 1000}, headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json() == []
