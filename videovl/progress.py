"""Progress that reads well where it lands: a redrawn tqdm bar on a terminal, plain lines in a log file.

A redrawn bar written to a file (a SLURM log, ``> run.log 2>&1``) is a carriage-return soup that reads as
one endless line; there, progress is one complete line every ``every`` updates and one at the end.

This module is a leaf: it imports nothing from the rest of videovl.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm.auto import tqdm

__all__ = ["LineProgress", "progress"]


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class LineProgress:
    """The part of tqdm's interface videovl uses, writing one full line per report instead of redrawing.

    A line is written every ``every`` updates (counted from ``initial``) and once more at ``close`` if
    the last one was not already reported.
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        initial: int = 0,
        desc: str = "",
        unit: str = "it",
        every: int | None = None,
        disable: bool = False,
        file: IO[str] | None = None,
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.start_n = total, initial, initial
        self.desc, self.unit, self.disable = desc, unit, disable
        self.every = max(1, every or (max(1, total // 10) if total else 100))
        self.file = file if file is not None else sys.stderr
        self.postfix: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.reported = initial
        self.closed = False

    def __iter__(self) -> Iterator:
        assert self.iterable is not None, "LineProgress was built without an iterable"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        before, self.n = self.n - self.start_n, self.n + n
        if (self.n - self.start_n) // self.every > before // self.every or self.n == self.total:
            self._report()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def write(self, message: str) -> None:
        if not self.disable:
            print(message, file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed and self.n != self.reported:
            self._report()
        self.closed = True

    def line(self) -> str:
        """The report as it is written: count, share, elapsed time, rate, time left, then the postfix."""
        elapsed = time.perf_counter() - self.started
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: " if self.desc else "", f"{self.n}"]
        if self.total:
            parts.append(f"/{self.total} ({100 * self.n / self.total:.0f}%)")
        parts.append(f" {self.unit}, {_clock(elapsed)} elapsed")
        if rate > 0:
            parts.append(f", {rate:.2f} {self.unit}/s" if rate >= 1 else f", {1 / rate:.2f} s/{self.unit}")
            if self.total and self.n < self.total:
                parts.append(f", {_clock((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(", " + ", ".join(f"{k}={v}" for k, v in self.postfix.items()))
        return "".join(parts)

    def _report(self) -> None:
        self.reported = self.n
        self.write(self.line())


def progress(
    iterable: Iterable | None = None,
    *,
    every: int | None = None,
    file: IO[str] | None = None,
    **kwargs: Any,
) -> tqdm | LineProgress:
    """A tqdm bar when ``file`` (default: stderr) is a terminal, else a :class:`LineProgress` reporting
    every ``every`` updates (default: a tenth of ``total``). ``kwargs`` are tqdm's ``total``,
    ``initial``, ``desc``, ``unit`` and ``disable``; ``dynamic_ncols`` and ``leave`` apply to the bar."""
    stream = file if file is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs.pop("leave", None)
    return LineProgress(iterable, every=every, file=stream, **kwargs)
