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
    e = dict(
        os.environ,
        LLR_FORKSERVER="1",
        LLR_FORKSERVER_DIR=str(tmp_path / "fs"),
        LLR_FORKSERVER_IDLE="30",
        LLR_FORKSERVER_PRELOAD="numpy,llr.cli",
    )
    return e


def llr(args, env, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "llr", *args], env=env, cwd=cwd, capture_output=True, text=True, **kw)


def test_same_outputs_status_and_errors(tmp_path, env):
    plain = dict(env, LLR_FORKSERVER="0")
    meta = tmp_path / "meta.csv"
    meta.write_text(
        "idx,split,y,s,g\n"
        + "".join(
            f"{i},{sp},{i % 2},{(i // 2) % 2},{2 * (i % 2) + (i // 2) % 2}\n"
            for i, sp in enumerate(["train"] * 20 + ["val"] * 8 + ["test"] * 8)
        )
    )
    args = ["split", "--dataset", "synth_waterbirds", "--metadata", str(meta), "--seed", "1", "--out"]
    a = llr(args + [str(tmp_path / "a.csv")], plain, tmp_path)
    b = llr(args + [str(tmp_path / "b.csv")], env, tmp_path)  # spawns the server
    c = llr(args + [str(tmp_path / "c.csv")], env, tmp_path)  # reuses it
    assert a.returncode == b.returncode == c.returncode == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text() == (tmp_path / "c.csv").read_text()
    assert list((tmp_path / "fs").glob("*.sock"))
    bad = llr(["split", "--dataset", "nope", "--metadata", str(meta), "--seed", "1", "--out", "x.csv"], env, tmp_path)
    from llr.data.registry import DATASETS

    assert (
        bad.returncode == 2
        and bad.stderr.strip() == f"llr: error: unknown dataset 'nope'; expected one of {sorted(DATASETS)}"
    )
    assert not (tmp_path / "x.csv").exists()


def test_sigterm_reaches_the_job(tmp_path, env):
    # A job that sleeps: 'collect' on a FIFO blocks reading until killed.
    fifo = tmp_path / "results" / "d" / "seed1" / "analysis" / "x.csv"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    llr(["collect", "--kind", "analysis", "--out", "warm.csv", "/nonexistent"], env, tmp_path)  # start server
    p = subprocess.Popen(
        [sys.executable, "-m", "llr", "collect", "--kind", "analysis", "--out", "o.csv", str(fifo)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=20)
    assert p.returncode == -signal.SIGTERM
    assert not (tmp_path / "o.csv").exists()


# ------------------------------------------------------- client death, exit status
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":  # zombies are dead already
                kids.setdefault(int(fields[1]), []).append(int(d))
    return kids


def _server_jobs(fsdir) -> list[int]:
    """The jobs in flight in the server of ``fsdir``: grandchildren of the
    server (server -> request handler -> job)."""
    import re

    pids = [int(m) for log in fsdir.glob("*.log") for m in re.findall(r"\(pid (\d+)\)", log.read_text())]
    kids = _children()
    return [j for s in pids for h in kids.get(s, []) for j in kids.get(h, [])]


def _blocked_job(tmp_path, env, out="o.csv"):
    """A client whose job blocks reading a FIFO (then would write ``out``),
    and the job's pid once it runs."""
    fifo = tmp_path / "results" / "d" / "seed1" / "analysis" / "x.csv"
    if not fifo.exists():
        fifo.parent.mkdir(parents=True)
        os.mkfifo(fifo)
        llr(["collect", "--kind", "analysis", "--out", "warm.csv", "/nonexistent"], env, tmp_path)  # start server
    cmd = [sys.executable, "-m", "llr", "collect", "--kind", "analysis", "--out", out, str(fifo)]
    return fifo, cmd


def _wait_for(pred, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def _feed(fifo) -> bool:
    """Write a valid CSV into the FIFO if a job still reads it; False if no reader."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        import errno

        assert e.errno == errno.ENXIO
        return False
    os.write(fd, b"epoch,directional_error\n1,0.5\n")
    os.close(fd)
    return True


def test_job_dies_with_its_client(tmp_path, env):
    """SIGKILL of the client (as when the workflow is killed) kills the job in
    the server before it can write its output (fault sweep item 13)."""
    fifo, cmd = _blocked_job(tmp_path, env)
    p = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    jobs = []
    try:
        jobs = _wait_for(lambda: _server_jobs(tmp_path / "fs"))
        assert len(jobs) == 1
        p.kill()
        p.wait(timeout=10)
        assert _wait_for(lambda: not _server_jobs(tmp_path / "fs"), timeout=5.0)
        assert not os.path.exists(f"/proc/{jobs[0]}") or open(f"/proc/{jobs[0]}/stat").read().split()[2] == "Z"
        assert not _feed(fifo)  # nobody reads the input any more
        time.sleep(0.5)
        assert not (tmp_path / "o.csv").exists()
    finally:
        for j in _server_jobs(tmp_path / "fs"):
            os.kill(j, signal.SIGKILL)


def test_job_killed_by_sigkill_exits_like_a_plain_process(tmp_path, env):
    """A job killed by SIGKILL (e.g. the OOM killer): the client dies of
    SIGKILL too, status 137 in a shell, no traceback (fault sweep item 11)."""
    fifo, cmd = _blocked_job(tmp_path, env)
    p = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jobs = _wait_for(lambda: _server_jobs(tmp_path / "fs"))
    assert len(jobs) == 1
    os.kill(jobs[0], signal.SIGKILL)
    _, err = p.communicate(timeout=20)
    assert p.returncode == -signal.SIGKILL
    assert "Error" not in err and "Traceback" not in err
    # the same seen from a shell: $? is 128 + 9
    import shlex

    sh = subprocess.Popen(
        ["sh", "-c", " ".join(map(shlex.quote, cmd)) + "; echo status=$?"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    jobs = _wait_for(lambda: _server_jobs(tmp_path / "fs"))
    assert len(jobs) == 1
    os.kill(jobs[0], signal.SIGKILL)
    out, err = sh.communicate(timeout=20)
    assert out.strip() == "status=137" and "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()


def test_exit_like_plain_status():
    from llr.runtime.forkserver import _exit_like

    assert _exit_like(0) == 0 and _exit_like(3) == 3
