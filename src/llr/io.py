"""File input and output shared by every command.

Outputs are written atomically (``atomic_path``): nothing half-written is
left behind on failure, the final file's mode follows the umask like any
file a plain ``open`` creates, and a full disk ends in one line naming the
file. Every JSON file written by ``write_json`` carries a signature (the
package version and a SHA-256 of its content) that ``read_json(...,
verify=True)`` checks, so collectors refuse hand-edited, truncated or
foreign files. Readers of embeddings and fingerprints of input files live
here too.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llr.errors import LLRError

SIGNATURE_KEY = "_llr"
# errnos of a write that failed because of the disk or its permissions, not
# because of the program: reported as one line naming the file.
_WRITE_ERRNOS = frozenset(
    getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM", "EIO") if hasattr(errno, n)
)
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows
    (``/proc/self/status``); elsewhere set and restored under a lock."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _write_error(path: Path, e: OSError) -> LLRError:
    cause = os.strerror(e.errno).lower() if e.errno else str(e)
    return LLRError(f"{path}: cannot write: {cause}")


def _torch_write_error(path: Path, e: RuntimeError) -> LLRError | None:
    """torch.save to a path reports a failed write as a RuntimeError of its
    zip writer (``inline_container``) without the errno."""
    msg = str(e)
    if "inline_container" not in msg and "PytorchStreamWriter" not in msg and "file write failed" not in msg:
        return None
    try:
        st = os.statvfs(path.parent)
        full = st.f_bavail * st.f_frsize < (1 << 20)
    except OSError:
        full = False
    cause = "no space left on device" if full else f"write failed ({msg.splitlines()[0][:120]})"
    return LLRError(f"{path}: cannot write: {cause}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if
    the block finishes without an exception, otherwise delete it. The file
    gets mode ``0o666 & ~umask``; a write failing for want of disk space,
    quota or permission becomes an ``LLRError`` naming ``path``."""
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + "".join(path.suffixes), dir=path.parent)
        tmp_path = Path(tmp)
        try:
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp creates 0600
        finally:
            os.close(fd)
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        if e.errno in _WRITE_ERRNOS and (
            e.filename is None or str(e.filename) in (str(path), str(tmp_path), str(path.parent))
        ):
            raise _write_error(path, e) from None
        raise
    except RuntimeError as e:
        err = _torch_write_error(path, e)
        if err is not None:
            raise err from None
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, through a Python file object so that a
    full disk raises ``OSError`` (ENOSPC) and not torch's errno-less
    RuntimeError."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)


# ---------------------------------------------------------------- JSON
def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _version() -> str:
    from llr import __version__

    return __version__


def sign(obj: dict) -> dict:
    """``obj`` as JSON will read it back, plus ``SIGNATURE_KEY``: the package
    version and the SHA-256 of the canonical JSON of everything else."""
    plain = json.loads(json.dumps(obj))  # tuples -> lists, keys -> str: what a reader sees
    plain.pop(SIGNATURE_KEY, None)
    plain[SIGNATURE_KEY] = {"version": _version(), "sha256": hashlib.sha256(_canonical(plain)).hexdigest()}
    return plain


def verify(obj: Any, path: str | os.PathLike) -> dict:
    """Check the signature ``sign`` added; return the object without it.
    Raises ``LLRError`` naming ``path`` when it is missing or does not match."""
    if not isinstance(obj, dict):
        raise LLRError(f"{path}: expected a JSON object written by llr, found a {type(obj).__name__}")
    rest = dict(obj)
    sig = rest.pop(SIGNATURE_KEY, None)
    if not isinstance(sig, dict) or "sha256" not in sig:
        raise LLRError(
            f"{path}: no {SIGNATURE_KEY!r} signature: not written by llr (or by an older version); "
            f"rerun the job that writes it"
        )
    if hashlib.sha256(_canonical(rest)).hexdigest() != sig["sha256"]:
        raise LLRError(
            f"{path}: content does not match its {SIGNATURE_KEY!r} checksum (edited or damaged "
            f"after llr {sig.get('version', '?')} wrote it); rerun the job that writes it"
        )
    return rest


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON atomically; a dict gets a signature (``sign``)."""
    if isinstance(obj, dict):
        obj = sign(obj)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, verify_signature: bool = False) -> Any:
    """Read a JSON file; a damaged or missing file is an ``LLRError`` naming
    it. The signature key is removed; with ``verify_signature`` it must be
    present and match."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise LLRError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LLRError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty" if not text.strip() else "incomplete or not JSON"
        raise LLRError(f"{path}: {what} ({e.msg} at line {e.lineno} column {e.colno})") from None
    if verify_signature:
        return verify(obj, path)
    if isinstance(obj, dict):
        obj.pop(SIGNATURE_KEY, None)
    return obj


def write_csv(path: str | os.PathLike, df) -> None:
    """Write a pandas DataFrame atomically, without the index."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def read_csv(path: str | os.PathLike, columns: tuple[str, ...] | list[str] = ()):
    """Read a CSV with pandas; a missing, empty or unparsable file, or one
    without the named ``columns``, is an ``LLRError`` naming it."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise LLRError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise LLRError(f"{path}: empty file, expected a CSV with a header") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise LLRError(f"{path}: not a readable CSV ({str(e).splitlines()[0][:160]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LLRError(f"{path}: column {missing[0]!r} missing, expected columns {list(columns)}")
    return df


# ---------------------------------------------------------------- arrays
def load_embeddings(path: str | os.PathLike, n_rows: int | None = None):
    """Memory-map an ``(N, d)`` float ``.npy`` of embeddings (row i = metadata
    idx i). A missing, truncated or malformed file, or one with other than
    ``n_rows`` rows, is an ``LLRError`` naming it and the cause."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise LLRError(f"{path}: file not found")
    try:
        X = np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "mmap length" in cause or "cannot mmap" in cause.lower() or "empty file" in cause:
            cause = f"truncated: {cause}"
        raise LLRError(f"{path}: not a readable .npy array ({cause})") from None
    except (OSError, EOFError) as e:
        raise LLRError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(X, np.ndarray) or X.ndim != 2 or not np.issubdtype(X.dtype, np.floating):
        raise LLRError(
            f"{path}: {getattr(X, 'dtype', '?')} array of shape {getattr(X, 'shape', '?')}, "
            f"expected a 2-D float array (N, d)"
        )
    if n_rows is not None and X.shape[0] != n_rows:
        raise LLRError(f"{path}: {X.shape[0]} rows, expected {n_rows} (one per metadata row)")
    return X


# ---------------------------------------------------------------- fingerprints
FULL_HASH_BYTES = 64 << 20  # files below this size are hashed whole
_EDGE = 1 << 20  # bigger files: size, mtime and their first and last MiB


def fingerprint_file(path: str | os.PathLike) -> str:
    """A content fingerprint of a file or folder for resume checks.

    Files under 64 MiB: SHA-256 of the whole content. Bigger files (image or
    token caches): SHA-256 of size, mtime (ns) and the first and last MiB, a
    cheap check that still changes whenever the file is rewritten. Folders:
    the relative names and fingerprints of their files, sorted. A missing
    path fingerprints as ``missing``."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\0{fingerprint_file(f)}\n".encode())
        return "dir:" + h.hexdigest()
    try:
        st = p.stat()
    except FileNotFoundError:
        return "missing"
    with open(p, "rb") as f:
        if st.st_size < FULL_HASH_BYTES:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return "full:" + h.hexdigest()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(f.read(_EDGE))
        f.seek(st.st_size - _EDGE)
        h.update(f.read(_EDGE))
    return "edges:" + h.hexdigest()
