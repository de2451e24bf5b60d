"""Progress bars in job logs (llr.runtime.progress): one line per update, no
terminal control codes, rate and ETA shown, off with LLR_PROGRESS=0."""

import io
import sys

from llr.runtime import progress as P


def _run(monkeypatch, env: dict, n: int = 5) -> str:
    buf = io.StringIO()  # not a terminal, like a job log
    monkeypatch.setattr(sys, "stderr", buf)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for _ in P.progress(range(n), desc="ERM train_none", unit="step"):
        pass
    return buf.getvalue()


def test_log_gets_plain_lines_with_rate(monkeypatch):
    out = _run(monkeypatch, {"LLR_PROGRESS_SECONDS": "0"})
    lines = out.splitlines()
    assert lines and "\r" not in out and "\x1b" not in out
    assert lines[-1].startswith("ERM train_none: 100%") and "5/5" in lines[-1] and "step/s" in lines[-1]


def test_nested_bar_cursor_codes_are_stripped():
    buf = io.StringIO()
    P._Lines(buf).write("\x1b[A\rembed:  50%|#####     | 1/2\r")
    assert buf.getvalue() == "embed:  50%|#####     | 1/2\n"


def test_off_with_env(monkeypatch):
    assert _run(monkeypatch, {"LLR_PROGRESS": "0"}) == ""
