"""Honest users' latency, server memory and job cancellation while hostile users attack a real
``slidelabel serve`` started with its defaults (issue 13's numbers).

One run: the server on the TCGA sample (benchmarks/server.py's project: superpixels, features,
400 labels, an epoch); 10 honest client threads request cached slide tiles, superpixel index
tiles and the guided queue, first on a quiet server, then while

- hostile uploads arrive: a 300 KB TIFF declaring 100,000 x 100,000 px, a stripped TIFF whose one
  strip decodes to 1.2 GB, random bytes, a truncated SVS, 300 MB of garbage streamed without a
  Content-Length, and two 50 MB JSON bodies (with and without a Content-Length);
- a long superpixel job (8 px superpixels at level 0, 100 iterations) is cancelled once running,
  and a small job is queued behind it on the one slide worker;
- schemathesis sends a bounded, derandomised set of requests for every operation of the server's
  OpenAPI document (but logout and deletes) as the owner of another project, on that project and
  its slide (as tests/server/test_second_attack_fuzz.py drives it, over HTTP).

Prints one JSON object: the peak memory (PSS) of the ``serve`` process tree, sampled every 100 ms,
before the attack, while the hostile uploads and bodies arrive (the issue's figure) and over the
whole attack (the long superpixel job included), Cancel -> the next job running and done, the 5xx count, the honest p95s
(quiet and under attack) and the issue's targets (memory < 1 GB, cancel < 5 s, no 5xx, p95 under
attack within 1.5x of quiet).

    OMP_NUM_THREADS=1 python benchmarks/abuse.py [--clients 10] [--quiet-seconds 15] [--examples 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

BENCHMARKS = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS.parent / "tests" / "server")]
from server import (  # noqa: E402  (benchmarks/server.py: the same server, project and tiles)
    PASSWORD, SLIDES, free_port, percentiles_ms, retrain_to_queue, set_up, start_server, tile_urls, wait_ready,
)
from test_slide_limits import strip_bomb  # noqa: E402  (the bomb the slide-limit tests refuse)

SMALL_SLIDE = "CMU-1-Small-Region.svs"
LONG_SLIDE = "TCGA-CR-7395-01A-01-TS1.svs"
LONG_JOB = {"base_mpp": 0.5, "magnification": 0, "size": "8px", "iterations": 100}
SMALL_JOB = {"magnification": 5, "size": "100um"}
FUZZ_PASSWORD = "fuzz-user-password"


class MemorySampler(threading.Thread):
    """Peak memory (bytes) of a process and all its descendants, sampled every 100 ms: the sum
    of their proportional set sizes (PSS: a page shared by forked processes counts once), and
    each process's share at the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root, self.running = psutil.Process(pid), True
        self.peak, self.at_peak = 0, {}
        self.samples: list[tuple[float, int, dict[str, int]]] = []  # (monotonic s, total, shares)

    def current(self) -> tuple[int, dict[str, int]]:
        shares = {}
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                name = " ".join(process.cmdline()[2:5]) or process.name()
                shares[f"{process.pid} {name}"] = process.memory_full_info().pss
            except psutil.Error:  # ended between the listing and the reading
                pass
        return sum(shares.values()), shares

    def run(self) -> None:
        while self.running:
            total, shares = self.current()
            self.samples.append((time.monotonic(), total, shares))
            if total > self.peak:
                self.peak, self.at_peak = total, shares
            time.sleep(0.1)

    def peak_between(self, start: float, end: float) -> dict:
        """The peak in MB of the samples taken from ``start`` to ``end`` (monotonic s), and each
        process's part of it."""
        _, total, shares = max((sample for sample in self.samples if start <= sample[0] <= end),
                               key=lambda sample: sample[1], default=(0, 0, {}))
        return {"total_mb": round(total / 2**20), "processes_mb": {name: round(pss / 2**20) for name, pss in shares.items()}}

    def take_peak(self) -> dict:
        """The peak since the last call in MB, each process's part of it; and start a new one."""
        peak = {"total_mb": round(self.peak / 2**20),
                "processes_mb": {name: round(pss / 2**20) for name, pss in self.at_peak.items()}}
        self.peak, self.at_peak = self.current()
        return peak


def honest_clients(base: str, headers: dict, urls: dict[str, list[str]], pid: int, clients: int,
                   until: Callable[[], bool]) -> tuple[dict[str, list[float]], list[str]]:
    """``clients`` threads requesting random tiles, index tiles and the queue until ``until()``:
    seconds per request kind, and what went wrong."""
    times: dict[str, list[float]] = {kind: [] for kind in (*urls, "queue")}
    errors: list[str] = []
    lock = threading.Lock()

    def loop(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            while not until():
                kind = rng.choice(list(times))
                url = f"/projects/{pid}/queue?n=8" if kind == "queue" else rng.choice(urls[kind])
                started = time.perf_counter()
                try:
                    status = client.get(url).status_code
                except httpx.HTTPError as error:
                    status = repr(error)
                elapsed = time.perf_counter() - started
                with lock:
                    (times[kind].append(elapsed) if status == 200 else errors.append(f"{url}: {status}"))

    threads = [threading.Thread(target=loop, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times, errors


def garbage(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """``total`` random bytes in chunks, streamed (the client sends no Content-Length)."""
    block = os.urandom(chunk)
    for _ in range(total // chunk):
        yield block


def multipart(name: str, body: Iterator[bytes]) -> Iterator[bytes]:
    boundary = "abuse-boundary"
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    yield from body
    yield f"\r\n--{boundary}--\r\n".encode()


def hostile_files(folder: Path) -> dict[str, Path]:
    """The files of the hostile uploads, written into ``folder`` by name (before the clock runs)."""
    files = {
        "bomb_100000px.tif": strip_bomb(folder / "bomb.tif", width=100_000, height=100_000, rows_per_strip=64),
        "strip_1200MB.tif": strip_bomb(folder / "strip.tif", width=20_000, height=20_000, rows_per_strip=20_000),
        "random.svs": folder / "random.svs",
        "truncated.svs": folder / "truncated.svs",
    }
    files["random.svs"].write_bytes(os.urandom(8 << 20))
    files["truncated.svs"].write_bytes((SLIDES / SMALL_SLIDE).read_bytes()[:300_000])
    return files


def hostile_requests(base: str, headers: dict, pid: int, sid: int, files: dict[str, Path]) -> dict[str, int | str]:
    """The uploads of ``files`` and the large bodies, all at once: each one's status code."""
    upload = f"/projects/{pid}/slides/upload"
    json_body = b'{"superpixels": [' + b"1," * (25 << 20) + b'1], "category_id": 1}'
    labels = f"/projects/{pid}/slides/{sid}/labels"

    def send(name: str) -> tuple[str, int | str]:
        with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
            try:
                if name in files:
                    response = client.post(upload, files={"file": (name, files[name].read_bytes(), "image/tiff")})
                elif name == "stream_300MB.tif":
                    response = client.post(upload, content=multipart(name, garbage(300 << 20)),
                                           headers={"Content-Type": "multipart/form-data; boundary=abuse-boundary"})
                elif name == "json_50MB":
                    response = client.put(labels, content=json_body, headers={"Content-Type": "application/json"})
                else:  # json_50MB_chunked
                    response = client.put(labels, content=iter([json_body[i:i + (1 << 20)] for i in range(0, len(json_body), 1 << 20)]),
                                          headers={"Content-Type": "application/json"})
                return name, response.status_code
            except httpx.HTTPError as error:  # the server may close the connection on a refused body
                return name, type(error).__name__

    names = [*files, "stream_300MB.tif", "json_50MB", "json_50MB_chunked"]
    with ThreadPoolExecutor(len(names)) as pool:
        return dict(pool.map(send, names))


def wait_state(client: httpx.Client, pid: int, job_id: int, states: set[str], timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/projects/{pid}/jobs/{job_id}").raise_for_status().json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} did not reach {states} in {timeout} s")


def new_project(client: httpx.Client, name: str, options: dict, slide: str = SMALL_SLIDE) -> tuple[int, int]:
    """A project on ``slide`` with superpixel ``options``: its id and the slide's."""
    pid = client.post("/projects", json={"name": name, "superpixels": options,
                                         "categories": [{"name": "a"}, {"name": "b"}]}).raise_for_status().json()["id"]
    added = client.post(f"/projects/{pid}/slides", json={"path": str(SLIDES / slide)}).raise_for_status().json()
    return pid, added["added"][0]["id"]


def _jobs_ended_between(client: httpx.Client, pid: int, start: datetime, end: datetime) -> int:
    """How many of project ``pid``'s jobs ended (last changed, done or failed) in [start, end] (UTC)."""
    ended = 0
    for job in client.get(f"/projects/{pid}/jobs").raise_for_status().json():
        changed = datetime.fromisoformat(job["updated_at"]).replace(tzinfo=UTC)
        ended += job["state"] in ("done", "failed") and start <= changed <= end
    return ended


def cancel_then_next(client: httpx.Client, other: httpx.Client, other_pid: int) -> dict[str, float | str]:
    """Cancel a running long superpixel job with a small one queued behind it: seconds from the
    Cancel to the long job cancelled, to the small job running and done, and how many jobs of
    ``other_pid`` (another user's, who had no turn yet: they go first) ended in between."""
    long_pid, long_sid = new_project(client, "long job", LONG_JOB, LONG_SLIDE)
    small_pid, small_sid = new_project(client, "small job", SMALL_JOB)
    long_job = client.post(f"/projects/{long_pid}/slides/{long_sid}/superpixels").raise_for_status().json()
    wait_state(client, long_pid, long_job["id"], {"running"})
    time.sleep(3)  # inside a tile
    small_job = client.post(f"/projects/{small_pid}/slides/{small_sid}/superpixels").raise_for_status().json()
    cancelled_at, cancelled_utc = time.perf_counter(), datetime.now(UTC)
    client.post(f"/projects/{long_pid}/jobs/{long_job['id']}/cancel").raise_for_status()
    stopped = wait_state(client, long_pid, long_job["id"], {"cancelled", "failed", "done"})
    stopped_s = time.perf_counter() - cancelled_at
    wait_state(client, small_pid, small_job["id"], {"running", "done", "failed"})
    running_s, running_utc = time.perf_counter() - cancelled_at, datetime.now(UTC)
    done = wait_state(client, small_pid, small_job["id"], {"done", "failed", "cancelled"})
    return {"long_job_state": stopped["state"], "cancel_to_stopped_s": round(stopped_s, 2),
            "cancel_to_next_job_running_s": round(running_s, 2),
            "other_users_jobs_ended_first": _jobs_ended_between(other, other_pid, cancelled_utc, running_utc),
            "cancel_to_next_job_done_s": round(time.perf_counter() - cancelled_at, 2), "next_job_state": done["state"]}


def fuzz_user(client: httpx.Client, base: str) -> tuple[dict[str, str], dict[str, int]]:
    """An account granted projects and slide folders, owning a project on the small slide: its
    headers, and the ids of the project and the slide by path parameter name."""
    user = client.post("/users", json={"username": "fuzzer", "password": FUZZ_PASSWORD}).raise_for_status().json()
    client.patch(f"/users/{user['id']}", json={"can_create_projects": True, "can_read_slide_folders": True}).raise_for_status()
    token = httpx.post(f"{base}/auth/login", json={"username": "fuzzer", "password": FUZZ_PASSWORD}).raise_for_status().json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as own:
        project_id, slide_id = new_project(own, "fuzzed", SMALL_JOB)
    return headers, {"project_id": project_id, "slide_id": slide_id}


def schemathesis_run(root: str, headers: dict, real: dict[str, int], examples: int) -> dict[str, int | list[str]]:
    """Every operation of the live server's OpenAPI document, ``examples`` derandomised cases
    each, with the path parameters named in ``real`` set to those ids (as
    tests/server/test_second_attack_fuzz.py does: random ids would only meet 404s)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{root}/openapi.json")
    counts = {"operations": 0, "requests": 0, "server_errors": 0, "transport_errors": 0, "ok_2xx": 0}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/auth/logout") or operation.method.upper() == "DELETE":
            continue  # they would end the token, the project or the slide the other cases use
        counts["operations"] += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case) -> None:
            given_ids = case.path_parameters or {}
            case.path_parameters = {**given_ids, **{k: v for k, v in real.items() if k in given_ids}}
            counts["requests"] += 1
            try:
                response = case.call(headers=headers, timeout=120)
            except Exception as error:  # a dropped connection is a finding too
                counts["transport_errors"] += 1
                failures.append(f"{case.method} {case.formatted_path}: {error!r}"[:300])
                return
            counts["ok_2xx"] += 200 <= response.status_code < 300
            if response.status_code >= 500:
                counts["server_errors"] += 1
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

        call()
    return {**counts, "failures": failures[:20]}


def p95s(times: dict[str, list[float]]) -> dict[str, dict]:
    return {"tile": percentiles_ms(times["tiles"]), "index_tile": percentiles_ms(times["superpixel-tiles"]),
            "queue": percentiles_ms(times["queue"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--quiet-seconds", type=float, default=15.0)
    parser.add_argument("--examples", type=int, default=4, help="schemathesis examples per operation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        root, base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api/v1"
        server = start_server(Path(tmp) / "data", port)
        memory = MemorySampler(server.pid)
        try:
            wait_ready(root)
            login = httpx.post(f"{base}/auth/login", json={"username": "admin", "password": PASSWORD})
            if login.status_code != 200:
                raise RuntimeError(f"another server took port {port}: run the benchmark again")
            headers = {"Authorization": f"Bearer {login.json()['token']}"}
            with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
                pid, sid, meta, _ = set_up(client)
                retrain_to_queue(client, pid)
                urls = {kind: tile_urls(pid, sid, meta, kind) for kind in ("tiles", "superpixel-tiles")}
                for kind_urls in urls.values():  # warm the caches, as benchmarks/server.py does
                    for url in kind_urls:
                        client.get(url).raise_for_status()
                fuzz_headers, fuzz_ids = fuzz_user(client, base)
                files = hostile_files(Path(tmp))
                memory.start()
                quiet_end = time.monotonic() + args.quiet_seconds
                quiet, quiet_errors = honest_clients(base, headers, urls, pid, args.clients, lambda: time.monotonic() > quiet_end)
                quiet_peak = memory.take_peak()

                attacks: dict[str, object] = {}
                done = threading.Event()

                def attack() -> None:
                    try:
                        with ThreadPoolExecutor(2) as pool:
                            fuzz = pool.submit(schemathesis_run, root, fuzz_headers, fuzz_ids, args.examples)
                            hostile_start = time.monotonic()
                            attacks["hostile_requests"] = hostile_requests(base, headers, pid, sid, files)
                            attacks["hostile_window"] = (hostile_start, time.monotonic())
                            with httpx.Client(base_url=base, headers=fuzz_headers, timeout=120) as fuzzer:
                                attacks["cancel"] = cancel_then_next(client, fuzzer, fuzz_ids["project_id"])
                            attacks["schemathesis"] = fuzz.result()
                    finally:
                        done.set()

                attacker = threading.Thread(target=attack)
                started = time.monotonic()
                attacker.start()
                loud, loud_errors = honest_clients(base, headers, urls, pid, args.clients, done.is_set)
                attacker.join()
                attack_s = time.monotonic() - started
                attack_peak = memory.take_peak()
        finally:
            memory.running = False
            server.terminate()
            server.wait(timeout=120)
    hostile_peak = memory.peak_between(*attacks["hostile_window"])
    quiet_p, loud_p = p95s(quiet), p95s(loud)
    ratios = {kind: round(loud_p[kind]["p95_ms"] / quiet_p[kind]["p95_ms"], 2)
              for kind in quiet_p if quiet_p[kind]["p95_ms"] and loud_p[kind]["p95_ms"]}
    fuzz, cancel = attacks["schemathesis"], attacks["cancel"]
    result = {
        "clients": args.clients, "quiet_seconds": args.quiet_seconds, "attack_seconds": round(attack_s, 1),
        "cpus": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        "memory_peak_pss": {"quiet": quiet_peak, "while_hostile_uploads_arrive": hostile_peak,
                            "under_attack": attack_peak,
                            "added_by_attack_mb": attack_peak["total_mb"] - quiet_peak["total_mb"]},
        "hostile_requests": attacks["hostile_requests"], "cancel": cancel, "schemathesis": fuzz,
        "honest_quiet": quiet_p, "honest_under_attack": loud_p, "p95_ratio": ratios,
        "honest_errors": {"quiet": quiet_errors[:10], "under_attack": loud_errors[:10]},
    }
    result["targets"] = {
        "memory_under_1_GB_while_hostile_uploads_arrive": hostile_peak["total_mb"] < 1024,
        "memory_under_1_GB_whole_attack": attack_peak["total_mb"] < 1024,
        "cancel_under_5_s": cancel["cancel_to_next_job_running_s"] < 5,
        "no_5xx": fuzz["server_errors"] == 0 and fuzz["transport_errors"] == 0,
        "honest_p95_within_1_5x": all(ratio <= 1.5 for ratio in ratios.values()) and not loud_errors,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
