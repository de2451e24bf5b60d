"""GPU slots for training jobs on a local multi-GPU machine.

Snakemake does not assign devices to jobs: it only caps how many jobs that
take a ``gpu`` resource run at once (``--resources gpu=N``, set by the
``local-gpu`` profile to GPUs x ``jobs_per_gpu``). Each training command
therefore claims a slot on a device itself, before CUDA is initialised: it
takes an exclusive ``flock`` on one of the device's ``jobs_per_gpu`` slot
files in a lock folder and sets ``CUDA_VISIBLE_DEVICES`` to that device, so
the job sees exactly one GPU (as ``cuda:0``) and a device never has more than
``jobs_per_gpu`` holders. A claim goes to the device with the fewest holders
(ties: an offset given by the process id), so no device is starved while
another is shared. The lock is held by the process's open file and released
by the kernel when the process ends, however it ends (SIGKILL and preemption
included), so no stale lock survives.

The devices are, in this order of precedence:

- ``LLR_GPUS``: a count (``4`` means devices 0..3) or a list of ids
  (``0,2,3``); ``0`` or empty turns claiming off;
- ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs) as set for the whole run;
- the GPUs ``nvidia-smi -L`` lists.

Slots per device: ``LLR_JOBS_PER_GPU`` (default 1; docs/gpu.md says how to
choose it). Slot 0 of device ``d`` is the file ``gpu-d.lock`` (the one-job
lock), slot ``k`` >= 1 is ``gpu-d.slot<k>.lock``; a short exclusive lock on
``claim.lock`` makes each claim's look-and-take atomic, so simultaneous
starters see each other's claims. Every job of one machine must use the same
lock folder (``LLR_GPU_LOCK_DIR``, default ``/tmp/llr-gpu-locks``) and the same
``LLR_JOBS_PER_GPU``.

Under SLURM (``SLURM_JOB_ID`` set, ``LLR_GPUS`` unset) nothing is claimed:
SLURM gives each job its own devices.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import subprocess
import sys
import time

from llr.errors import LLRError

DEFAULT_LOCK_DIR = "/tmp/llr-gpu-locks"
CLAIM_MUTEX = "claim.lock"

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
    """How many devices this machine's jobs share (at least 1)."""
    return max(len(visible_devices(env)), 1)


def jobs_per_gpu(env: dict | None = None) -> int:
    """Training jobs that may share one device: ``LLR_JOBS_PER_GPU``, default 1."""
    env = os.environ if env is None else env
    raw = str(env.get("LLR_JOBS_PER_GPU", "") or "").strip()
    if raw == "":
        return 1
    if not re.fullmatch(r"\d+", raw) or int(raw) < 1:
        raise LLRError(f"LLR_JOBS_PER_GPU={raw!r}: expected a whole number >= 1 (training jobs per GPU)")
    return int(raw)


def gpu_slots(env: dict | None = None) -> int:
    """How many training jobs may run at once on this machine: devices x
    ``jobs_per_gpu`` (the ``gpu`` resource of the local-gpu profile)."""
    return gpu_count(env) * jobs_per_gpu(env)


def wants_gpu(device: str | None, env: dict | None = None) -> bool:
    """Whether a training command should claim a device: its device is
    ``cuda``/``auto`` or ``LLR_GPUS`` is set, and SLURM has not already
    assigned devices to the job."""
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID") and env.get("LLR_GPUS") is None:
        return False
    dev = (device or "cpu").lower()
    return dev.startswith("cuda") or dev == "auto" or env.get("LLR_GPUS") is not None


def _lock_name(device: str, slot: int = 0) -> str:
    """Slot 0 keeps the one-job-per-GPU name, so N = 1 locks exactly as before."""
    stem = "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device)
    return f"{stem}.lock" if slot == 0 else f"{stem}.slot{slot}.lock"


def _open_lock_dir(lock_dir: str) -> None:
    os.makedirs(lock_dir, exist_ok=True)
    try:  # shared by every user's jobs on the machine, like /tmp itself
        os.chmod(lock_dir, 0o1777)
    except OSError:
        pass


def _open_lock(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.fchmod(fd, 0o666)
    except OSError:
        pass
    return fd


def _try_lock(path: str) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if another holds it."""
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _free_slots(lock_dir: str, device: str, n_slots: int) -> list[int]:
    """Slots of ``device`` nobody holds now (each probed by a lock taken and
    dropped at once)."""
    free = []
    for k in range(n_slots):
        fd = _try_lock(os.path.join(lock_dir, _lock_name(device, k)))
        if fd is not None:
            os.close(fd)
            free.append(k)
    return free


def claim(
    devices: list[str] | None = None,
    lock_dir: str | None = None,
    timeout: float | None = None,
    poll: float = 0.5,
    log=sys.stderr,
    jobs_per_device: int | None = None,
) -> str | None:
    """Claim a slot on the least-held device and pin this process to it.

    Each device has ``jobs_per_device`` slots (default :func:`jobs_per_gpu`).
    Under the claim mutex, counts every device's holders, orders the devices
    by holders (ties: starting at an offset given by the process id, so that
    simultaneous starters spread out) and takes the first free slot; waits
    (polling every ``poll`` seconds, the mutex released) while every slot is
    taken, up to ``timeout`` seconds (None: forever). Returns the device id,
    or None when there is no device to claim.
    """
    devices = visible_devices() if devices is None else devices
    if not devices:
        return None
    if "device" in _held:  # already claimed by this process
        return _held["device"]  # type: ignore[return-value]
    n_slots = jobs_per_gpu() if jobs_per_device is None else int(jobs_per_device)
    if n_slots < 1:
        raise LLRError(f"jobs per GPU {n_slots}: expected a whole number >= 1")
    lock_dir = lock_dir or os.environ.get("LLR_GPU_LOCK_DIR") or DEFAULT_LOCK_DIR
    _open_lock_dir(lock_dir)
    start = os.getpid() % len(devices)
    order = devices[start:] + devices[:start]
    t0 = time.monotonic()
    waited = False
    while True:
        mutex = _open_lock(os.path.join(lock_dir, CLAIM_MUTEX))
        try:
            fcntl.flock(mutex, fcntl.LOCK_EX)  # held for the few ms of one look-and-take
            free = {dev: _free_slots(lock_dir, dev, n_slots) for dev in order}
            # Fewest holders first; sorted() is stable, so ties keep the pid rotation.
            for dev in sorted((d for d in order if free[d]), key=lambda d: n_slots - len(free[d])):
                slot = free[dev][0]
                path = os.path.join(lock_dir, _lock_name(dev, slot))
                fd = _try_lock(path)
                if fd is None:  # taken by a claimer that ignores the mutex (older code)
                    continue
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                _held.update(fd=fd, device=dev, slot=slot)
                os.environ["CUDA_VISIBLE_DEVICES"] = dev
                share = f", slot {slot + 1} of {n_slots}" if n_slots > 1 else ""
                print(f"llr: claimed GPU {dev} (CUDA_VISIBLE_DEVICES={dev}{share}, lock {path})", file=log, flush=True)
                return dev
        finally:
            os.close(mutex)  # drops the mutex
        if timeout is not None and time.monotonic() - t0 >= timeout:
            raise TimeoutError(
                f"no free GPU slot among {devices} x {n_slots} after {timeout:.0f}s (locks in {lock_dir})"
            )
        if not waited:
            what = f"all GPUs {devices}" if n_slots == 1 else f"all {n_slots} slots of GPUs {devices}"
            print(f"llr: {what} taken, waiting (locks in {lock_dir})", file=log, flush=True)
            waited = True
        time.sleep(poll)


def current_claim() -> tuple[str, int] | None:
    """(device, slot) this process holds, or None."""
    if "device" not in _held:
        return None
    return str(_held["device"]), int(_held.get("slot", 0))  # type: ignore[arg-type]


def release() -> None:
    """Give the claimed slot back (the process's exit does this too)."""
    fd = _held.pop("fd", None)
    _held.pop("device", None)
    _held.pop("slot", None)
    if fd is not None:
        os.close(fd)  # type: ignore[arg-type]


def claim_for(device: str | None) -> str | None:
    """The training commands' hook: claim a GPU slot when :func:`wants_gpu`."""
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
