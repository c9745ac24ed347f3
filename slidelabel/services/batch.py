"""Superpixels for many slides: expand inputs, name output folders, isolate failures."""

from __future__ import annotations

import glob
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from slidelabel.errors import SlidelabelError, SlideNotFoundError
from slidelabel.pipelines.slide_readers import slide_extensions
from slidelabel.pipelines.superpixels import ProgressFunction
from slidelabel.services.superpixels import SlideResult, SuperpixelOptions, compute_slide_superpixels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """A slide that could not be processed and why, in one line."""

    slide: Path
    message: str


@dataclass
class BatchReport:
    results: list[SlideResult] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.results)

    def summary(self) -> str:
        total = len(self.results) + len(self.failures)
        return (
            f"{total} slide{'s' if total != 1 else ''}: {self.count('done')} done, "
            f"{self.count('skipped')} already finished, {len(self.failures)} failed"
        )


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Slides named by paths, glob patterns or folders (their slide files), in order, without repeats.

    A path that does not exist is kept so that it is reported as missing; a pattern that matches
    nothing is kept as written for the same reason.
    """
    extensions = slide_extensions()
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in extensions)
        elif glob.has_magic(item):
            found += [Path(p) for p in sorted(glob.glob(item))] or [path]
        else:
            found.append(path)
    unique = dict.fromkeys(p.absolute() for p in found)
    return list(unique)


def output_names(slides: list[Path]) -> dict[Path, str]:
    """A folder name per slide: its file stem, plus a short hash of its path when stems collide."""
    stems: dict[str, int] = {}
    for slide in slides:
        stems[slide.stem] = stems.get(slide.stem, 0) + 1
    return {
        slide: slide.stem if stems[slide.stem] == 1
        else f"{slide.stem}-{hashlib.sha256(str(slide).encode()).hexdigest()[:8]}"
        for slide in slides
    }


def run_batch(
    slides: list[Path],
    out: Path,
    options: SuperpixelOptions,
    *,
    workers: int = 1,
    progress_for: Callable[[Path], ProgressFunction] | None = None,
    on_result: Callable[[SlideResult | Failure], None] | None = None,
) -> BatchReport:
    """Superpixels of every slide into ``out/NAME/``; one slide's failure does not stop the others."""

    def work(slide: Path, folder: Path) -> SlideResult:
        progress = progress_for(slide) if progress_for else None
        return compute_slide_superpixels(slide, folder, options, workers=workers, progress=progress)

    return run_each(slides, out, work, on_result=on_result)


def run_each(
    slides: list[Path],
    out: Path,
    work: Callable[[Path, Path], SlideResult],
    *,
    on_result: Callable[[SlideResult | Failure], None] | None = None,
) -> BatchReport:
    """``work(slide, out/NAME)`` for every slide (names by :func:`output_names`); a slide that
    fails becomes a one-line :class:`Failure` and the others go on."""
    report = BatchReport()
    names = output_names(slides)
    for slide in slides:
        outcome: SlideResult | Failure
        try:
            if not slide.exists():
                raise SlideNotFoundError(slide, "no such file")
            outcome = work(slide, out / names[slide])
            report.results.append(outcome)
        except SlidelabelError as error:
            outcome = Failure(slide, str(error) if str(slide) in str(error) else f"{slide}: {error}")
            report.failures.append(outcome)
        except Exception as error:  # a bug or an unforeseen file problem: keep going with the others
            logger.debug("unexpected failure on %s", slide, exc_info=True)
            outcome = Failure(slide, f"{slide}: unexpected {type(error).__name__}: {error} (run with --debug for details)")
            report.failures.append(outcome)
        if on_result:
            on_result(outcome)
    return report
