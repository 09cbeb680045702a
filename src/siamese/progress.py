"""Progress of a long job: a bar on a terminal, a line every few seconds anywhere else (logs, nohup, CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds // 60 % 60} min"


class Progress:
    """``update(n)`` as items are done. On a terminal: a tqdm bar. Elsewhere: ``desc: N of M unit,
    R unit/s, ETA T`` on ``stream`` at most every ``interval`` seconds, and once at the end."""

    def __init__(self, total: int, desc: str, unit: str = "images", stream: TextIO | None = None,
                 interval: float = 10.0) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = self.last_line = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False) if self.stream.isatty() else None

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.monotonic()
        if self.done >= self.total or now - self.last_line >= self.interval:
            self.last_line = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.desc}: {self.done} of {self.total} {self.unit}, {rate:.1f} {self.unit}/s"
        if self.done < self.total and rate > 0:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
