"""Throughput of a cohort job on a worker fleet: slides per hour with one worker, then two.

The path the web client's "Apply epoch N to a server folder" takes: a project at the defaults
(superpixels, ``tissue`` features, ``linear`` model) trained on one real-tissue mosaic slide
(``benchmarks/tissue_mosaic.py``: MoNuSeg H&E at 40x), then an epoch-1 cohort over all the mosaic
slides, run by N ``slidelabel worker`` processes (``--concurrency 1``, ``OMP_NUM_THREADS=1``) on
a Redis broker. Each run gets a folder of its own (links to the same slides), so nothing is
reused between runs. The time runs from the cohort's submission, once every worker answers a
ping, to its end; peak memory is each worker's job process's high-water mark (VmHWM).

Prints one JSON object: each run, and ``ratio_two_to_one``, the best two-worker slides per hour
over the best one-worker figure, from runs that alternate in the same process (the load other
people put on a shared machine drifts); ``cpu_seconds_per_slide`` is what a slide costs whatever
that load::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cohort_fleet.py [--slides 6] [--size 4096] \
        [--broker redis://127.0.0.1:6379/10] [--db postgresql://...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from sqlalchemy import select

from slidelabel.cli.server_options import settings_environment
from slidelabel.services import job_runs
from slidelabel.services.accounts import ensure_admin
from slidelabel.services.cohort import MANIFEST_FILE
from slidelabel.services.cohort_jobs import COHORT_SLIDE, cohort_dir, start_cohort
from slidelabel.services.epochs import start_epoch
from slidelabel.services.labels import locked_slide, set_labels
from slidelabel.services.projects import NewCategory, create_project
from slidelabel.services.slide_jobs import submit_prepare
from slidelabel.services.slides import add_from_server
from slidelabel.settings import Settings
from slidelabel.store.database import Database, migrate
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Project, User
from slidelabel.store.superpixel_files import TABLE_FILE, read_manifest
from slidelabel.store.superpixel_table import read_table
from slidelabel.workers.app import make_celery

sys.path.insert(0, str(Path(__file__).parent))
from tissue_mosaic import make  # noqa: E402


class Recorder:
    """A sender that keeps what was sent, for the jobs run here before the fleet starts."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def send_task(self, name: str, args: list, queue: str) -> None:
        self.sent.append(args[0])


def run_here(database: Database, settings: Settings, recorder: Recorder) -> None:
    """Run every recorded job in this process, in order."""
    while recorder.sent:
        job_runs.run(database, settings, recorder.sent.pop(0), sender=recorder)


def trained_project(database: Database, settings: Settings, slide: Path) -> tuple[Project, User]:
    """A project at the defaults with epoch 1 trained on ``slide``: tissue-rich superpixels
    labelled "tissue", nearly bare ones "glass" (every other one; throughput needs a model, not a
    good one)."""
    recorder = Recorder()
    with database.session(write=True) as session:
        ensure_admin(session, "benchmark-admin")
        admin = session.scalar(select(User))
        project = create_project(session, admin, "cohort fleet",
                                 categories=[NewCategory("tissue"), NewCategory("glass")])
        project_id, categories = project.id, {c.name: c.id for c in project.categories}
    added = add_from_server(database, settings, project_id, str(slide)).slides[0]
    with database.session() as session:
        submit_prepare(database, recorder, session.get(Project, project_id), [added], user_id=None)
    run_here(database, settings, recorder)
    table = ProjectFiles(settings.data_dir, project_id).superpixels(added.id) / TABLE_FILE
    fraction = read_table(table).tissue_fraction
    with database.session(write=True) as session:
        locked = locked_slide(session, project_id, added.id)
        set_labels(session, locked, admin.id, (np.flatnonzero(fraction >= 0.9)[::2] + 1).tolist(), categories["tissue"])
        set_labels(session, locked, admin.id, (np.flatnonzero(fraction <= 0.1)[::2] + 1).tolist(), categories["glass"])
    start_epoch(database, recorder, settings.data_dir, project_id, admin.id)
    run_here(database, settings, recorder)
    with database.session() as session:
        return session.get(Project, project_id), session.get(User, admin.id)


def _job_processes(worker: subprocess.Popen) -> list[dict[str, str]]:
    """The /proc status fields of the worker's job processes (its prefork children)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(worker.pid):
            found.append({**fields, "pid": status.parent.name})
    return found


def peak_memory_mb(worker: subprocess.Popen) -> float:
    """The largest VmHWM of the worker's job processes, in MB."""
    return round(max((int(f["VmHWM"].split()[0]) / 1024 for f in _job_processes(worker) if "VmHWM" in f),
                     default=0.0), 1)


def cpu_seconds(workers: list[subprocess.Popen]) -> float:
    """CPU time (user + system, s) the workers and their job processes have used: what a slide
    costs whatever else the machine runs, unlike the wall time."""
    ticks = 0
    for pid in [str(w.pid) for w in workers] + [f["pid"] for w in workers for f in _job_processes(w)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def fleet_run(database: Database, settings: Settings, project: Project, user: User, folder: Path,
              workers: int) -> dict:
    """The cohort over ``folder`` with ``workers`` fresh workers: wall time, slides per hour, memory."""
    env = {**os.environ, **settings_environment(settings), "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "slidelabel.cli.main", "worker", "--quiet", "--loglevel",
                                   "warning", "--concurrency", "1", "--hostname", f"bench-{i}@%h"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(workers)]
    celery = make_celery(settings)
    try:
        deadline = time.monotonic() + 120
        while len(celery.control.ping(timeout=1.0)) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not answer within 120 s")
        started, cpu_before, load = time.perf_counter(), cpu_seconds(processes), os.getloadavg()[0]
        cohort = start_cohort(database, celery, settings, project=project, user=user, epoch=1, folder=str(folder),
                              formats=[])
        while True:
            with database.session() as session:
                job = session.get(Job, cohort.id)
                if job.state not in (JobState.queued, JobState.running):
                    break
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(processes) - cpu_before
        memory = [peak_memory_mb(process) for process in processes]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
    with database.session() as session:
        children = list(session.scalars(select(Job).where(Job.kind == COHORT_SLIDE,
                                                          Job.key.like(f"{COHORT_SLIDE}:{cohort.id}:%"))))
    slides = len(children)
    root = cohort_dir(settings.data_dir, project.id, cohort.params["out"])
    slide_seconds = [read_manifest(root / c.params["name"] / MANIFEST_FILE)["seconds"] for c in children
                     if c.state == JobState.done]
    per_worker = {f"bench-{i}": sum(f"on worker bench-{i}@" in c.log for c in children) for i in range(workers)}
    return {"workers": workers, "state": job.state.value, "message": job.message, "slides": slides,
            "seconds": round(seconds, 1), "slides_per_hour": round(slides / seconds * 3600, 1),
            "slides_per_hour_per_worker": round(slides / seconds * 3600 / workers, 1),
            "slide_seconds_median": round(float(np.median(slide_seconds)), 1) if slide_seconds else None,
            "cpu_seconds_per_slide": round(cpu / max(slides, 1), 2), "load_average_1m_before": round(load, 1),
            "slides_per_worker": per_worker, "peak_memory_mb_per_worker": memory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=6, help="mosaic slides (at most 6)")
    parser.add_argument("--size", type=int, default=4096, help="slide side in px at 40x (multiple of 1024)")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--db", default=None, help="database URL (default SQLite in the data folder)")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default a temporary one)")
    parser.add_argument("--mosaic", type=Path, default=None,
                        help="slides made before by tissue_mosaic.py make (default: make them in OUT/mosaic)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="one- and two-worker runs alternate this many times (a shared machine's load drifts)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="cohort-fleet-"))
    if args.mosaic is None:
        made = make(out / "mosaic", slides=args.slides, size=args.size)
        mosaic, slides = out / "mosaic", [Path(entry["slide"]) for entry in made["slides"]]
    else:
        mosaic, slides = args.mosaic, sorted((args.mosaic / "slides").glob("*.tiff"))[:args.slides]
    runs = {(r, n): out / "folders" / f"round-{r}-{n}-workers" for r in range(args.rounds) for n in (1, 2)}
    for folder in runs.values():
        folder.mkdir(parents=True, exist_ok=True)
        for slide in slides:
            (folder / slide.name).symlink_to(slide)
    import redis

    redis.Redis.from_url(args.broker).flushdb()  # no message of an earlier run
    settings = Settings(data_dir=out / "data", db=args.db, broker=args.broker,
                        slide_folders=[mosaic / "slides", out / "folders"])
    database = Database(settings.database_url)
    migrate(database.engine)
    project, user = trained_project(database, settings, slides[0])
    measured = {key: fleet_run(database, settings, project, user, folder, key[1]) for key, folder in runs.items()}
    one = [run for (_r, n), run in measured.items() if n == 1]
    two = [run for (_r, n), run in measured.items() if n == 2]
    best = {n: max(run["slides_per_hour"] for run in group) for n, group in ((1, one), (2, two))}
    with tifffile.TiffFile(slides[0]) as tiff:
        slide_px = tiff.pages[0].shape[:2]
    print(json.dumps({"benchmark": "cohort_fleet", "slide_px": list(slide_px), "slides": len(slides),
                      "project_defaults": {"extractor": project.extractor, "model": project.model,
                                           "superpixels": project.superpixel_options},
                      "cpus": os.cpu_count(), "load_average_1m_after": round(os.getloadavg()[0], 1),
                      "best_slides_per_hour": {"one_worker": best[1], "two_workers": best[2]},
                      "ratio_two_to_one": round(best[2] / best[1], 2),
                      "one_worker": one, "two_workers": two}, indent=1))
    database.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
