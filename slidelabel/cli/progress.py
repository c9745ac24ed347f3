"""Progress bars for work that reports ``(stage, done, total)``, as the pipelines do."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from slidelabel.services.batch import Failure
from slidelabel.services.superpixels import SlideResult


class StageBar:
    """One tqdm bar at a time: a new stage closes the previous stage's bar and starts its own.

    ``unit`` names what is counted; by default the stage's name without a plural s ("images" ->
    "image"). A disabled bar ignores every call.
    """

    def __init__(self, *, enabled: bool, prefix: str = "", unit: str | None = None,
                 position: int = 0, leave: bool = True) -> None:
        self.enabled = enabled
        self.prefix = prefix
        self.unit = unit
        self.position = position
        self.leave = leave
        self.stage: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"{self.prefix}{stage}", unit=self.unit or stage.rstrip("s"),
                            position=self.position, leave=self.leave)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None


class BatchBars:
    """An overall bar over a batch of slides, a :class:`StageBar` per slide below it, and one line
    per finished slide (``verb`` says what was done to it) or failure (``error: ...`` on stderr)."""

    def __init__(self, total: int, *, enabled: bool, verb: Callable[[SlideResult], str]) -> None:
        self.enabled = enabled
        self.verb = verb
        self.overall = tqdm(total=total, desc="slides", unit="slide", position=0, disable=not enabled)
        self.slide_bar: StageBar | None = None

    def progress_for(self, slide: Path) -> StageBar:
        """The bar of ``slide``, to hand to the service as its progress function."""
        self.slide_bar = StageBar(enabled=self.enabled, prefix=f"{slide.name} ", unit="tile", position=1, leave=False)
        return self.slide_bar

    def on_result(self, outcome: SlideResult | Failure) -> None:
        if self.slide_bar is not None:
            self.slide_bar.close()
        if isinstance(outcome, Failure):
            tqdm.write(f"error: {outcome.message}", file=sys.stderr)
        else:
            verb = "already finished" if outcome.status == "skipped" else self.verb(outcome)
            tqdm.write(f"{outcome.slide.name}: {verb} -> {outcome.folder}",
                       file=sys.stdout if self.enabled else sys.stderr)
        self.overall.update(1)

    def close(self) -> None:
        self.overall.close()
