"""The fork server runs a command exactly as a plain process would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, LLR_FORKSERVER="1", LLR_FORKSERVER_DIR=str(tmp_path / "fs"),
             LLR_FORKSERVER_IDLE="30", LLR_FORKSERVER_PRELOAD="numpy,llr.cli")
    return e


def llr(args, env, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "llr", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, **kw)


def test_same_outputs_status_and_errors(tmp_path, env):
    plain = dict(env, LLR_FORKSERVER="0")
    meta = tmp_path / "meta.csv"
    meta.write_text("idx,split,y,s,g\n" + "".join(
        f"{i},{sp},{i % 2},{(i // 2) % 2},{2 * (i % 2) + (i // 2) % 2}\n"
        for i, sp in enumerate(["train"] * 20 + ["val"] * 8 + ["test"] * 8)))
    args = ["split", "--dataset", "synth_waterbirds", "--metadata", str(meta), "--seed", "1", "--out"]
    a = llr(args + [str(tmp_path / "a.csv")], plain, tmp_path)
    b = llr(args + [str(tmp_path / "b.csv")], env, tmp_path)  # spawns the server
    c = llr(args + [str(tmp_path / "c.csv")], env, tmp_path)  # reuses it
    assert a.returncode == b.returncode == c.returncode == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text() == (tmp_path / "c.csv").read_text()
    assert list((tmp_path / "fs").glob("*.sock"))
    bad = llr(["split", "--dataset", "nope", "--metadata", str(meta), "--seed", "1", "--out", "x.csv"], env, tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == "llr: error: unknown dataset 'nope'; expected one of " \
        "['celeba', 'civilcomments', 'multinli', 'synth_multinli', 'synth_waterbirds', 'waterbirds']"
    assert not (tmp_path / "x.csv").exists()


def test_sigterm_reaches_the_job(tmp_path, env):
    # A job that sleeps: 'collect' on a FIFO blocks reading until killed.
    fifo = tmp_path / "results" / "d" / "seed1" / "analysis" / "x.csv"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    llr(["collect", "--kind", "analysis", "--out", "warm.csv", "/nonexistent"], env, tmp_path)  # start server
    p = subprocess.Popen([sys.executable, "-m", "llr", "collect", "--kind", "analysis", "--out", "o.csv", str(fifo)],
                         env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=20)
    assert p.returncode == -signal.SIGTERM
    assert not (tmp_path / "o.csv").exists()
