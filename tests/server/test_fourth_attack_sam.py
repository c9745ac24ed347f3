"""Fourth attack on issue 13: the smart tool embedded every region a viewer asked for at once. A
ViT-B SAM's image encoder holds 1.8 GB above its weights for the 23 s of one embedding on a CPU,
so ten parallel POST .../shapes/sam/embed of different regions (any viewer) asked for 18 GB. Now
one embedding runs at a time per process; a request that waits past ``EMBED_WAIT_S`` is a 503."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from slidelabel.errors import BusyError
from slidelabel.services import smart
from slidelabel.store.models import Role, Slide


class SlowEmbedder:
    """A stand-in SAM predictor whose embedding takes ``seconds`` and counts how many run at once."""

    folder = Path("slow-sam")
    input_px = 64

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()

    def embed(self, rgb_H_W_3: np.ndarray) -> object:
        with self._lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return object()


@pytest.fixture
def slow(monkeypatch) -> SlowEmbedder:
    embedder = SlowEmbedder(0.3)
    monkeypatch.setattr(smart, "sam_model", lambda settings: (embedder, ""))
    monkeypatch.setattr(smart, "_EMBEDDINGS", smart._Embeddings(smart.EMBEDDINGS))
    return embedder


def _cmu(cmu_slide: Path) -> Slide:
    return Slide(id=1, project_id=1, name=cmu_slide.name, path=str(cmu_slide), width=2220, height=2967)


def test_parallel_embeddings_of_different_regions_run_one_at_a_time(slow, cmu_slide):
    slide = _cmu(cmu_slide)
    regions = [(100.0 * i, 0.0, 100.0 * i + 500, 500.0) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda region: smart.embed_region(None, slide, region), regions))
    assert slow.most == 1
    assert [embedding.region_level0[0] for embedding, _, _ in found] == [0, 100, 200, 300]


def test_requests_for_the_same_region_share_one_embedding(slow, cmu_slide):
    slide = _cmu(cmu_slide)
    with ThreadPoolExecutor(3) as pool:
        cached = [c for _, c, _ in pool.map(lambda _: smart.embed_region(None, slide, (0.0, 0.0, 500.0, 500.0)),
                                              range(3))]
    assert slow.calls == 1 and sorted(cached) == [False, True, True]


def test_a_request_that_waits_too_long_is_busy_and_the_route_says_503(
        slow, monkeypatch, client, member_headers, project, slide_row, cmu_slide):
    monkeypatch.setattr(smart, "EMBED_WAIT_S", 0.05)
    assert smart._EMBEDDERS.take_now()  # another request's embedding is running
    try:
        with pytest.raises(BusyError):
            smart.embed_region(None, _cmu(cmu_slide), (0.0, 0.0, 500.0, 500.0))
        response = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_row}/shapes/sam/embed",
                               headers=member_headers(Role.viewer), json={"region_level0": [0, 0, 500, 500]})
    finally:
        smart._EMBEDDERS.give_back()
    assert response.status_code == 503, response.text
    assert "busy" in response.json()["detail"]
    assert slow.calls == 0
