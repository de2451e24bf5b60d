"""A fork server that makes a job start in milliseconds instead of seconds.

Every workflow rule runs ``python -m llr <command>`` in a fresh process.
On a laptop CPU, importing torch, torchvision and transformers costs 3-10 s
per process, more than many of the jobs themselves. With
``LLR_FORKSERVER=1`` the command line becomes a thin client: it connects to
a per-user server that has imported those libraries once, sends its argv,
working directory, environment and standard file descriptors, and the
server forks a child that runs the command as if it had been started
directly (same files, same exit status; SIGTERM/SIGINT to the client reach
the child, so preemption and Ctrl-C behave as usual). A job killed by a
signal kills its client with the same signal (status 128 + k in a shell).
If the client dies first (SIGKILL of it or of the workflow), the job's
process group is SIGKILLed at once, before it can write outputs that no one
records or keep its GPU lock; a job whose handler dies is killed too.

The server is keyed on the interpreter and the modification times of this
package's sources, so an edited ``src/llr`` gets a new server; it exits
after ``LLR_FORKSERVER_IDLE`` seconds (default 120) without a request. Any
failure to reach a server falls back to running the command in-process.
Nothing is shared between jobs but imported, unused library code: the
server never runs a tensor operation, initializes CUDA or starts threads
(BLAS is pinned to one thread before numpy is imported).
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

# transformers imports its models lazily: name BERT's modules, or every text
# job pays their import (5-6 s here) again.
PRELOAD = (
    "numpy",
    "pandas",
    "scipy.stats",
    "torch",
    "torchvision.models",
    "transformers",
    "transformers.models.bert.configuration_bert",
    "transformers.models.bert.modeling_bert",
    "transformers.models.bert.tokenization_bert",
    "matplotlib.pyplot",
    "llr.cli",
    "llr.train.erm",
    "llr.train.pretrain",
    "llr.lastlayer.job",
    "llr.analysis.nc1",
    "llr.analysis.margins",
    "llr.analysis.svm",
    "llr.reporting.tidy",
    "llr.reporting.figures",
    "llr.reporting.claims",
    "llr.data.synthetic_text",
    "llr.data.synthetic_text_tokens",
    "llr.data.tokens",
    "llr.data.inputs",
    "llr.data.synthetic_images",
    "llr.models.factory",
    "llr.data.real",
    "llr.train.balancing",
)
_HDR = struct.Struct("!I")


def _key() -> str:
    pkg = Path(__file__).resolve().parents[1]  # the llr package, every subpackage
    stamp = [sys.executable, str(pkg)] + [
        f"{p.relative_to(pkg)}:{p.stat().st_mtime_ns}" for p in sorted(pkg.rglob("*.py"))
    ]
    return hashlib.sha1("\n".join(stamp).encode()).hexdigest()[:16]


def _dir() -> Path:
    d = Path(os.environ.get("LLR_FORKSERVER_DIR") or f"/tmp/llr-forkserver-{os.getuid()}")
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def socket_path() -> Path:
    return _dir() / f"{_key()}.sock"


def _send(sock: socket.socket, obj) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(_HDR.pack(len(data)) + data)


def _recv(sock: socket.socket):
    head = b""
    while len(head) < _HDR.size:
        chunk = sock.recv(_HDR.size - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = _HDR.unpack(head)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


# ------------------------------------------------------------------ client
def run_via_server(argv: list[str]) -> int | None:
    """Run ``llr argv`` in a forked child of the server; None if no server
    could be reached (the caller then runs the command itself). Inside a
    SLURM job the command always runs itself: a forked job would live in the
    cgroup (CPUs, memory, GPUs) of whichever job started the server."""
    if os.environ.get("SLURM_JOB_ID"):
        return None
    path = socket_path()
    try:
        sock = _connect(path)
    except OSError:
        return None
    with sock:
        msg = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        try:
            socket.send_fds(sock, [_HDR.pack(len(msg)) + msg], [0, 1, 2])
            hello = _recv(sock)
        except OSError:
            return None
        if not hello or "pid" not in hello:
            return None
        child = int(hello["pid"])

        def forward(signum, _frame):
            try:
                os.killpg(child, signum)  # the job and its loader workers
            except (ProcessLookupError, PermissionError):
                pass

        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(s, forward)
        while True:
            try:
                done = _recv(sock)
                break
            except InterruptedError:
                continue
    if not done:
        return 1
    return _exit_like(int(done["status"]))


def _exit_like(status: int) -> int:
    """Exit status of the client for the job's ``waitstatus_to_exitcode``:
    a job killed by signal k kills the client with k too (SIGKILL and SIGSTOP
    cannot be caught, so their disposition is left alone), so the caller
    sees -k, a shell 128 + k (137 for SIGKILL); 128 + k is also the fallback
    return value should the client survive its own signal."""
    if status >= 0:
        return status
    sig = -status
    try:
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), sig)
        time.sleep(1.0)  # the signal is delivered before kill() returns; this is a safety net
    except (OSError, ValueError):
        pass
    return 128 + sig


def _connect(path: Path) -> socket.socket:
    for attempt in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return s
        except OSError:
            s.close()
            if attempt:
                raise
            _spawn(path)
    raise OSError("unreachable")


def _spawn(path: Path) -> None:
    """Start a server for ``path`` (once, under a lock) and wait until it listens."""
    lock = path.with_suffix(".lock")
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
            return
        except OSError:
            pass
        finally:
            probe.close()
        log = open(path.with_suffix(".log"), "ab")
        subprocess.Popen(
            [sys.executable, "-m", "llr.runtime.forkserver", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env={
                **os.environ,
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "LLR_FORKSERVER": "0",
            },
        )
        deadline = time.time() + float(os.environ.get("LLR_FORKSERVER_START_TIMEOUT", "120"))
        while time.time() < deadline:
            if path.exists():
                return
            time.sleep(0.05)


# ------------------------------------------------------------------ server
def serve(path: Path, idle: float) -> None:
    import importlib

    names = os.environ.get("LLR_FORKSERVER_PRELOAD")
    for name in names.split(",") if names else PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as e:  # a missing optional library only costs speed
            print(f"forkserver: preload {name} failed: {e}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped automatically
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp))
    srv.listen(64)
    os.replace(tmp, path)  # visible only once listening
    ino = os.stat(path).st_ino
    srv.settimeout(idle)
    print(f"forkserver: listening on {path} (pid {os.getpid()})", flush=True)
    try:
        while True:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                break
            if os.fork() == 0:
                srv.close()
                _handle(conn)  # never returns
            conn.close()
    finally:
        try:
            if os.stat(path).st_ino == ino:  # not replaced by a newer server
                path.unlink()
        except OSError:
            pass


def _handle(conn: socket.socket) -> None:
    """In a forked handler: receive a request, fork the job, report its status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        fds = array.array("i")
        data, ancdata, _, _ = conn.recvmsg(1 << 20, socket.CMSG_LEN(3 * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        (n,) = _HDR.unpack(data[: _HDR.size])
        body = data[_HDR.size :]
        while len(body) < n:
            body += conn.recv(n - len(body))
        req = json.loads(body)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _run_job(req, list(fds))  # never returns
        try:
            os.setpgid(pid, pid)  # also done by the child: whichever runs first, killpg finds the group
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        _send(conn, {"pid": pid})
        status = _wait_or_kill(pid, conn)
        if status is not None:
            _send(conn, {"status": os.waitstatus_to_exitcode(status)})
    finally:
        os._exit(0)


def _wait_or_kill(pid: int, conn: socket.socket) -> int | None:
    """Wait for job ``pid``; if its client goes away first (the socket hangs
    up: the client, or the workflow around it, was killed), SIGKILL the
    job's process group at once, before it can write outputs nobody will
    record, and return None. Otherwise return the job's wait status."""
    import select

    try:
        pidfd = os.pidfd_open(pid)  # Linux >= 5.3: readable when the job exits
    except (AttributeError, OSError):
        pidfd = -1  # elsewhere: poll the job every 0.1 s
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        if pidfd >= 0:
            poller.register(pidfd, select.POLLIN)
        while True:
            events = dict(poller.poll(None if pidfd >= 0 else 100))
            if pidfd in events:
                return os.waitpid(pid, 0)[1]
            if pidfd < 0:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return status
            if conn.fileno() in events:
                try:
                    gone = not conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    _kill_job(pid)
                    os.waitpid(pid, 0)
                    return None
                conn.recv(1 << 16)  # the client sends nothing else; drop stray bytes
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _kill_job(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass


def _die_with_parent() -> None:
    """Linux: SIGKILL this job if its handler (the process that watches the
    client) dies; a no-op elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def _run_job(req: dict, fds: list[int]) -> None:
    code = 1
    try:
        parent = os.getppid()
        _die_with_parent()
        if os.getppid() != parent:  # the handler died before prctl took effect
            os._exit(137)
        try:
            os.setpgid(0, 0)
        except OSError:  # the handler already did it
            pass
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, buffering=1)
        sys.stderr = open(2, "w", closefd=False, buffering=1)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        sys.argv = ["llr", *req["argv"]]
        from llr.cli import main

        code = main(req["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(os.environ.get("LLR_FORKSERVER_IDLE", "120")))
