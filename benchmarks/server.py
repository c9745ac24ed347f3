"""Server latency under load, on loopback, against a real ``slidelabel serve`` with its workers.

Prints one JSON object: p50/p95 latency (ms) of slide tiles, superpixel index tiles and the guided
queue under ``--clients`` concurrent clients, label writes per second, the time from "retrain" to a
new queue on the TCGA sample slide, and the targets of the server issue (tile p95 < 100 ms when
cached, queue p95 < 200 ms, no error).

    python benchmarks/server.py [--clients 20] [--seconds 10] [--http-workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

SLIDES = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides"
SLIDE = "TCGA-CR-7395-01A-01-TS1.svs"
#: Unique per run, so a login proves the server on the port is this run's own.
PASSWORD = f"benchmark-{secrets.token_hex(8)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int, http_workers: int = 1) -> subprocess.Popen:
    env = {**os.environ, "SLIDELABEL_ADMIN_PASSWORD": PASSWORD}
    command = [sys.executable, "-m", "slidelabel.cli.main", "serve", "--data-dir", str(data_dir), "--port", str(port),
               "--slide-folder", str(SLIDES), "--http-workers", str(http_workers)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_ready(base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not start")


def wait_job(client: httpx.Client, project: int, job_id: int, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/projects/{project}/jobs/{job_id}").raise_for_status().json()
        if job["state"] in ("done", "failed", "cancelled"):
            if job["state"] != "done":
                raise RuntimeError(f"job {job_id} {job['state']}: {job['message']}")
            return job
        time.sleep(0.2)
    raise RuntimeError(f"job {job_id} did not finish in {timeout} s")


def set_up(client: httpx.Client) -> tuple[int, int, dict, int]:
    """A project on the TCGA slide with superpixels, features and a few hundred labels."""
    project = client.post("/projects", json={
        "name": "benchmark", "superpixels": {"base_mpp": 0.5, "size": "32um"},
        "categories": [{"name": "dark"}, {"name": "light"}]}).raise_for_status().json()
    pid = project["id"]
    slide = client.post(f"/projects/{pid}/slides", json={"path": str(SLIDES / SLIDE)}).raise_for_status().json()
    sid = slide["added"][0]["id"] if "added" in slide else slide["id"]
    for job in client.post(f"/projects/{pid}/jobs/prepare").raise_for_status().json():
        wait_job(client, pid, job["id"])
    slides = client.get(f"/projects/{pid}/slides").raise_for_status().json()
    n = next(s for s in slides if s["id"] == sid)["superpixels"]
    meta = client.get(f"/projects/{pid}/slides/{sid}/tiles").raise_for_status().json()
    rng = np.random.default_rng(0)
    chosen = rng.choice(np.arange(1, n + 1), size=min(400, n), replace=False)
    dark, light = (c["id"] for c in project["categories"])
    for part, category in ((chosen[::2], dark), (chosen[1::2], light)):
        client.put(f"/projects/{pid}/slides/{sid}/labels",
                   json={"superpixels": part.tolist(), "category_id": category}).raise_for_status()
    return pid, sid, meta, n


def retrain_to_queue(client: httpx.Client, pid: int) -> float:
    started = time.perf_counter()
    job = client.post(f"/projects/{pid}/epochs").raise_for_status().json()
    wait_job(client, pid, job["id"])
    client.get(f"/projects/{pid}/queue", params={"n": 8}).raise_for_status()
    return time.perf_counter() - started


def tile_urls(pid: int, sid: int, meta: dict, kind: str) -> list[str]:
    """Every tile of the two highest-resolution levels (what a pathologist pans over)."""
    levels, tile = meta["levels"], meta["tile_width"]
    urls = []
    for z in (levels - 1, levels - 2):
        scale = 2 ** (levels - 1 - z)
        nx, ny = -(-meta["width"] // (tile * scale)), -(-meta["height"] // (tile * scale))
        suffix = "jpg" if kind == "tiles" else "png"
        urls += [f"/projects/{pid}/slides/{sid}/{kind}/{z}/{x}/{y}.{suffix}" for x in range(nx) for y in range(ny)]
    return urls


def hammer(base: str, headers: dict, urls: dict[str, list[str]], clients: int, seconds: float,
           label_write: tuple[int, int, int, list[int]]) -> tuple[dict[str, list[float]], int, int]:
    """``clients`` threads, each looping over a random request kind for ``seconds``."""
    pid, sid, n, categories = label_write
    times: dict[str, list[float]] = {kind: [] for kind in (*urls, "queue", "labels")}
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            while time.monotonic() < stop:
                kind = rng.choice(list(times))
                started = time.perf_counter()
                if kind == "queue":
                    response = client.get(f"/projects/{pid}/queue", params={"n": 8})
                elif kind == "labels":
                    ids = rng.sample(range(1, n + 1), 10)
                    response = client.put(f"/projects/{pid}/slides/{sid}/labels",
                                          json={"superpixels": ids, "category_id": rng.choice(categories)})
                else:
                    response = client.get(rng.choice(urls[kind]))
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code >= 400:
                        errors[0] += 1
                    else:
                        times[kind].append(elapsed)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times, errors[0], len(times["labels"])


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50_ms": None, "p95_ms": None, "requests": 0}
    return {"p50_ms": round(1000 * float(np.percentile(samples, 50)), 1),
            "p95_ms": round(1000 * float(np.percentile(samples, 95)), 1), "requests": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--http-workers", type=int, default=1, help="API processes of the server (serve --http-workers)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        server = start_server(Path(tmp), port, args.http_workers)
        try:
            wait_ready(f"http://127.0.0.1:{port}")
            login = httpx.post(f"{base}/auth/login", json={"username": "admin", "password": PASSWORD})
            if login.status_code != 200:
                raise RuntimeError(f"another server took port {port}: run the benchmark again")
            token = login.json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                pid, sid, meta, n = set_up(client)
                retrain_s = retrain_to_queue(client, pid)
                categories = [c["id"] for c in client.get(f"/projects/{pid}").json()["categories"]]
                urls = {kind: tile_urls(pid, sid, meta, kind) for kind in ("tiles", "superpixel-tiles")}
                for kind_urls in urls.values():  # warm the caches: the targets are for cached tiles
                    for url in kind_urls:
                        client.get(url).raise_for_status()
            times, errors, writes = hammer(base, headers, urls, args.clients, args.seconds, (pid, sid, n, categories))
        finally:
            server.terminate()
            server.wait(timeout=60)
    result = {
        "clients": args.clients, "seconds": args.seconds, "http_workers": args.http_workers, "superpixels": n,
        "tile": percentiles_ms(times["tiles"]), "index_tile": percentiles_ms(times["superpixel-tiles"]),
        "queue": percentiles_ms(times["queue"]), "label_write": percentiles_ms(times["labels"]),
        "label_writes_per_s": round(writes / args.seconds, 1), "errors": errors,
        "retrain_to_queue_s": round(retrain_s, 2),
    }
    result["targets"] = {
        "tile_p95_under_100_ms": result["tile"]["p95_ms"] is not None and result["tile"]["p95_ms"] < 100,
        "queue_p95_under_200_ms": result["queue"]["p95_ms"] is not None and result["queue"]["p95_ms"] < 200,
        "no_error": errors == 0,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
