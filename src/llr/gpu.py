"""One GPU per training job on a local multi-GPU machine.

Snakemake does not assign devices to jobs: it only caps how many jobs that
take a ``gpu`` resource run at once (``--resources gpu=N``, set by the
``local-gpu`` profile). Each training command therefore claims a device
itself, before CUDA is initialised: it takes an exclusive ``flock`` on one
file per device in a lock folder and sets ``CUDA_VISIBLE_DEVICES`` to that
device, so the job sees exactly one GPU (as ``cuda:0``). The lock is held by
the process's open file and released by the kernel when the process ends,
however it ends (SIGKILL and preemption included), so no stale lock survives.

The devices are, in this order of precedence:

- ``LLR_GPUS``: a count (``4`` means devices 0..3) or a list of ids
  (``0,2,3``); ``0`` or empty turns claiming off;
- ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs) as set for the whole run;
- the GPUs ``nvidia-smi -L`` lists.

Under SLURM (``SLURM_JOB_ID`` set, ``LLR_GPUS`` unset) nothing is claimed:
SLURM gives each job its own devices. The lock folder is ``LLR_GPU_LOCK_DIR``
or ``/tmp/llr-gpu-locks``; every job of one machine must use the same one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import subprocess
import sys
import time

DEFAULT_LOCK_DIR = "/tmp/llr-gpu-locks"

# The open lock file of this process's claim: keeping a reference keeps the
# lock; the kernel drops it when the process exits.
_held: dict[str, object] = {}


def visible_devices(env: dict | None = None) -> list[str]:
    """Device ids jobs may claim (see the module docstring for the order)."""
    env = os.environ if env is None else env
    spec = env.get("LLR_GPUS")
    if spec is not None:
        spec = spec.strip()
        if spec == "" or spec == "0":
            return []
        if re.fullmatch(r"\d+", spec):
            return [str(i) for i in range(int(spec))]
        return [d.strip() for d in spec.split(",") if d.strip()]
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return [d.strip() for d in cvd.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    n = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    return [str(i) for i in range(n)]


def gpu_count(env: dict | None = None) -> int:
    """How many training jobs may run at once on this machine (at least 1)."""
    return max(len(visible_devices(env)), 1)


def wants_gpu(device: str | None, env: dict | None = None) -> bool:
    """Whether a training command should claim a device: its device is
    ``cuda``/``auto`` or ``LLR_GPUS`` is set, and SLURM has not already
    assigned devices to the job."""
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID") and env.get("LLR_GPUS") is None:
        return False
    dev = (device or "cpu").lower()
    return dev.startswith("cuda") or dev == "auto" or env.get("LLR_GPUS") is not None


def _lock_name(device: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock"


def _open_lock_dir(lock_dir: str) -> None:
    os.makedirs(lock_dir, exist_ok=True)
    try:  # shared by every user's jobs on the machine, like /tmp itself
        os.chmod(lock_dir, 0o1777)
    except OSError:
        pass


def claim(devices: list[str] | None = None, lock_dir: str | None = None, timeout: float | None = None,
          poll: float = 0.5, log=sys.stderr) -> str | None:
    """Claim one free device and pin this process to it.

    Tries the devices in order, starting at an offset given by the process id
    so that simultaneous starters spread out; waits (polling every ``poll``
    seconds) while all are taken, up to ``timeout`` seconds (None: forever).
    Returns the device id, or None when there is no device to claim.
    """
    devices = visible_devices() if devices is None else devices
    if not devices:
        return None
    if "device" in _held:  # already claimed by this process
        return _held["device"]  # type: ignore[return-value]
    lock_dir = lock_dir or os.environ.get("LLR_GPU_LOCK_DIR") or DEFAULT_LOCK_DIR
    _open_lock_dir(lock_dir)
    start = os.getpid() % len(devices)
    order = devices[start:] + devices[:start]
    t0 = time.monotonic()
    waited = False
    while True:
        for dev in order:
            path = os.path.join(lock_dir, _lock_name(dev))
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    continue
                raise
            try:
                os.fchmod(fd, 0o666)
            except OSError:
                pass
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _held["fd"] = fd
            _held["device"] = dev
            os.environ["CUDA_VISIBLE_DEVICES"] = dev
            print(f"llr: claimed GPU {dev} (CUDA_VISIBLE_DEVICES={dev}, lock {path})", file=log, flush=True)
            return dev
        if timeout is not None and time.monotonic() - t0 >= timeout:
            raise TimeoutError(f"no free GPU among {devices} after {timeout:.0f}s (locks in {lock_dir})")
        if not waited:
            print(f"llr: all GPUs {devices} taken, waiting (locks in {lock_dir})", file=log, flush=True)
            waited = True
        time.sleep(poll)


def release() -> None:
    """Give the claimed device back (the process's exit does this too)."""
    fd = _held.pop("fd", None)
    _held.pop("device", None)
    if fd is not None:
        os.close(fd)  # type: ignore[arg-type]


def claim_for(device: str | None) -> str | None:
    """The training commands' hook: claim a GPU when :func:`wants_gpu`."""
    if not wants_gpu(device):
        return None
    return claim()


def cuda_available() -> bool:
    """Whether torch sees a usable CUDA device here (imports torch)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available() and torch.cuda.device_count() > 0)
