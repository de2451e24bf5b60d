"""Progress bars for job logs: tqdm (rate, ETA) on every long loop.

In a terminal the bar redraws in place; in a job log (stderr redirected to a
file) each update is its own line, at most one every ``LLR_PROGRESS_SECONDS``
seconds (default 30), so a log stays readable with ``cat`` or ``tail -f``.
``LLR_PROGRESS=0`` turns the bars off.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Lines(io.TextIOBase):
    """A stream that turns tqdm's carriage-return redraws (and the cursor
    moves of nested bars) into plain lines."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, s: str) -> int:
        text = _ANSI.sub("", s).replace("\r", "\n")
        lines = [line for line in text.split("\n") if line.strip()]
        if lines:
            self._stream.write("\n".join(lines) + "\n")
        return len(s)

    def flush(self) -> None:
        self._stream.flush()


def progress(
    iterable: Iterable | None = None, *, desc: str, total: int | None = None, unit: str = "it", **kw: Any
) -> tqdm:
    """A tqdm bar on stderr, set up for a terminal or a job log."""
    stream = sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    interval = 0.5 if tty else float(os.environ.get("LLR_PROGRESS_SECONDS", "30"))
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        file=stream if tty else _Lines(stream),
        mininterval=interval,
        maxinterval=max(interval, 10.0),
        ascii=not tty,
        dynamic_ncols=tty,
        disable=os.environ.get("LLR_PROGRESS") == "0",
        **kw,
    )
