"""An injected sleep and the clock it moves: tests that wait on a vendor never really wait."""

from __future__ import annotations


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.now = 0.0

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now
