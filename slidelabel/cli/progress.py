"""Progress bars for work that reports ``(stage, done, total)``, as the pipelines do."""

from __future__ import annotations

from tqdm import tqdm


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
