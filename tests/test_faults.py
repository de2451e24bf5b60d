"""Faults found by the fault sweep (items 11, 12, 14, 15, 16): damaged inputs,
full disks, untrusted metadata, stale resume checkpoints, file modes."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from llr import cli, io
from llr.data.registry import get_spec, read_metadata, standardize
from llr.errors import LLRError


def _one_line(e: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


def _dataset(root: Path, n_per=6) -> tuple[Path, Path]:
    """A standardized synth_waterbirds metadata and split under ``root``."""
    spec = get_spec("synth_waterbirds")
    recs = [(sp, g // 2, g % 2) for sp in ("train", "val", "test") for g in range(4) for _ in range(n_per)]
    meta = standardize(pd.DataFrame(recs, columns=["split", "y", "s"]), spec, "test")
    d = root / "results" / "synth_waterbirds"
    d.mkdir(parents=True)
    meta.to_csv(d / "metadata.csv", index=False)
    role = meta["split"].map({"train": "heldout", "val": "val", "test": "test"})
    pd.DataFrame({"idx": meta["idx"], "role": role}).to_csv(d / "split.csv", index=False)
    return d / "metadata.csv", d / "split.csv"


# ------------------------------------------------------------ truncated embeddings
def _truncated(path: Path, n: int, d: int = 8) -> Path:
    np.save(path, np.random.default_rng(0).normal(size=(n, d)).astype(np.float16))
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 40)
    return path


def test_load_embeddings_names_file_and_cause(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.ones((5, 3), np.float16))
    X = io.load_embeddings(good, n_rows=5)
    assert X.shape == (5, 3) and isinstance(X, np.memmap)
    bad = _truncated(tmp_path / "embeddings.npy", 50)
    with pytest.raises(LLRError) as e:
        io.load_embeddings(bad)
    _one_line(e, str(bad), "truncated", "mmap length is greater than file size")
    with pytest.raises(LLRError) as e:
        io.load_embeddings(good, n_rows=6)
    _one_line(e, str(good), "5 rows, expected 6")
    np.save(tmp_path / "one.npy", np.ones(4, np.float32))
    with pytest.raises(LLRError) as e:
        io.load_embeddings(tmp_path / "one.npy")
    _one_line(e, "one.npy", "expected a 2-D float array")
    with pytest.raises(LLRError) as e:
        io.load_embeddings(tmp_path / "missing.npy")
    _one_line(e, "missing.npy", "file not found")


@pytest.mark.parametrize("command", ["svm", "margins"])
def test_analysis_jobs_report_truncated_embeddings(tmp_path, capsys, command):
    meta, split = _dataset(tmp_path)
    emb = _truncated(tmp_path / "embeddings.npy", len(pd.read_csv(meta)))
    out = tmp_path / "out.csv"
    code = cli.main(
        [
            command,
            "--dataset",
            "synth_waterbirds",
            "--embeddings",
            str(emb),
            "--metadata",
            str(meta),
            "--split",
            str(split),
            "--epochs",
            "2",
            "--seed",
            "0",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"llr: error: {emb}: ") and "truncated" in err
    assert not out.exists()


def test_lastlayer_job_reports_truncated_embeddings(tmp_path):
    from llr.lastlayer.job import run_lastlayer_job

    meta, split = _dataset(tmp_path)
    emb = _truncated(meta.parent / "embeddings.npy", len(pd.read_csv(meta)))
    np.savez(meta.parent / "head.npz", W=np.zeros((2, 8), np.float32), b=np.zeros(2, np.float32))
    with pytest.raises(LLRError) as e:
        run_lastlayer_job(
            str(emb),
            str(meta.parent / "head.npz"),
            str(meta),
            str(split),
            "full",
            "llr",
            None,
            0,
            1,
            str(tmp_path / "m.json"),
        )
    _one_line(e, str(emb), "truncated")
    assert not (tmp_path / "m.json").exists()


# ------------------------------------------------------------ full disk
def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_write_json_and_csv(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_text", _enospc)
    target = tmp_path / "out" / "metrics.json"
    with pytest.raises(LLRError) as e:
        io.write_json(target, {"a": 1})
    assert _one_line(e) == f"{target}: cannot write: no space left on device"
    monkeypatch.setattr(pd.DataFrame, "to_csv", _enospc)
    with pytest.raises(LLRError) as e:
        io.write_csv(tmp_path / "out" / "t.csv", pd.DataFrame({"a": [1]}))
    _one_line(e, "t.csv: cannot write: no space left on device")
    assert list((tmp_path / "out").iterdir()) == []  # no .part left behind


def test_full_disk_torch_save(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _enospc)
    with pytest.raises(LLRError) as e:
        io.save_torch({"x": torch.zeros(3)}, tmp_path / "model.pt")
    assert _one_line(e) == f"{tmp_path / 'model.pt'}: cannot write: no space left on device"

    # torch.save given a path reports a failed write as an errno-less RuntimeError
    def zip_fail(obj, f):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    class _Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(os, "statvfs", lambda p: _Full())
    with pytest.raises(LLRError) as e:
        with io.atomic_path(tmp_path / "b.pt") as tmp:
            zip_fail(None, tmp)
    assert _one_line(e) == f"{tmp_path / 'b.pt'}: cannot write: no space left on device"
    assert list(tmp_path.iterdir()) == []
    # torch.save to a real full device through a Python file object raises ENOSPC
    monkeypatch.undo()
    if os.path.exists("/dev/full"):
        with pytest.raises(OSError) as e2, open("/dev/full", "wb") as f:
            torch.save({"x": torch.zeros(1000)}, f)
        assert e2.value.errno == errno.ENOSPC


def test_full_disk_resume_checkpoint(tmp_path, monkeypatch):
    """train()'s resume checkpoint: one line naming resume.pt, nothing left."""
    monkeypatch.setattr(torch, "save", _enospc)
    with pytest.raises(LLRError) as e:
        _train(tmp_path / "ck" / "resume.pt", epochs=2)
    assert _one_line(e) == f"{tmp_path / 'ck' / 'resume.pt'}: cannot write: no space left on device"
    assert list((tmp_path / "ck").iterdir()) == []


def test_cli_one_line_for_os_errors(tmp_path, capsys, monkeypatch):
    meta, _ = _dataset(tmp_path)
    # a directory where a file is expected
    code = cli.main(
        [
            "split",
            "--dataset",
            "synth_waterbirds",
            "--metadata",
            str(tmp_path),
            "--seed",
            "1",
            "--out",
            str(tmp_path / "s.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err == f"llr: error: {tmp_path}: is a directory\n"

    def full(a):
        raise OSError(errno.ENOSPC, "No space left on device", "results/tables/table2.csv")

    monkeypatch.setattr(cli, "cmd_table2", full)
    code = cli.main(["table2", "--metadata", str(meta), "--out-csv", "a", "--out-md", "b"])
    assert code == 2
    assert capsys.readouterr().err == "llr: error: results/tables/table2.csv: no space left on device\n"


# ------------------------------------------------------------ metadata invariants
def test_read_metadata_accepts_valid_and_shuffled(tmp_path):
    meta, _ = _dataset(tmp_path)
    df = read_metadata(meta)
    assert len(df) == 72 and df["g"].dtype == np.int64
    pd.read_csv(meta).sample(frac=1, random_state=0).to_csv(meta, index=False)
    assert sorted(read_metadata(meta)["idx"]) == list(range(72))


@pytest.mark.parametrize(
    "edit, line, rule",
    [
        (lambda d: d.assign(idx=d["idx"].where(d.index != 5, 3)), 7, "idx must be unique"),
        (lambda d: d.assign(idx=d["idx"].where(d.index != 9, 72)), 11, "idx must lie in 0..71"),
        (
            lambda d: d.assign(idx=d["idx"].astype(float).where(d.index != 4, 1.5)),
            6,
            "idx must be a non-negative integer",
        ),
        (
            lambda d: d.assign(y=d["y"].where(d.index != 8, 2), g=d["g"].where(d.index != 8, 4)),
            10,
            "y must be < 2 (synth_waterbirds has 2 classes)",
        ),
        (lambda d: d.assign(s=d["s"].where(d.index != 2, -1)), 4, "s must be a non-negative integer"),
        (lambda d: d.assign(g=d["g"].where(d.index != 12, 3)), 14, "g must equal y * 2 + s"),
        (lambda d: d.assign(split=d["split"].where(d.index != 30, "training")), 32, "split must be one of"),
    ],
)
def test_read_metadata_rejects_broken_rows(tmp_path, edit, line, rule):
    meta, _ = _dataset(tmp_path)
    edit(pd.read_csv(meta)).to_csv(meta, index=False)
    with pytest.raises(LLRError) as e:
        read_metadata(meta)
    msg = _one_line(e, str(meta), f"line {line} (", rule)
    assert msg.startswith(f"{meta}: line {line} (idx=")


def test_read_metadata_first_bad_row_and_unknown_dataset(tmp_path):
    meta, _ = _dataset(tmp_path)
    d = pd.read_csv(meta)
    d.loc[20, "g"] = 0  # g rule, later row
    d.loc[3, "split"] = "dev"  # split rule, earlier row: reported
    d.to_csv(meta, index=False)
    with pytest.raises(LLRError) as e:
        read_metadata(meta)
    _one_line(e, "line 5 (", "split must be one of")
    # a folder that names no dataset: ranges unknown, |S| = max(s) + 1 = 2
    other = tmp_path / "elsewhere" / "metadata.csv"
    other.parent.mkdir()
    d = pd.read_csv(tmp_path / "results" / "synth_waterbirds" / "split.csv")  # no y, s, g
    d.to_csv(other, index=False)
    with pytest.raises(LLRError) as e:
        read_metadata(other)
    _one_line(e, str(other), "columns ['split', 'y', 's', 'g'] missing")
    good = pd.read_csv(meta)
    good.loc[3, "split"] = "val"
    good.loc[20, "g"] = 2 * good.loc[20, "y"] + good.loc[20, "s"]
    good.loc[0, ["y", "s", "g"]] = [5, 1, 11]  # a 6th class is fine when the spec is unknown
    good.to_csv(other, index=False)
    assert read_metadata(other).loc[0, "g"] == 11
    good.loc[0, "g"] = 10
    good.to_csv(other, index=False)
    with pytest.raises(LLRError) as e:
        read_metadata(other)
    _one_line(e, "line 2 (", "g must equal y * 2 + s")
    with pytest.raises(LLRError) as e:  # an explicit spec checks the ranges
        read_metadata(other, "synth_waterbirds")
    _one_line(e, "line 2 (", "y must be < 2")


# ------------------------------------------------------------ resume fingerprint
def _train(resume, epochs=3, stop_after=None, input_files=None, run_params=None, seen=None):
    from llr.data.inputs import ImageInputs
    from llr.data.synthetic_images import synth_waterbirds
    from llr.models.factory import build_model
    from llr.train.balancing import balance
    from llr.train.erm import TrainConfig, train

    sizes = {"train": [12, 4, 4, 12], "val": [2] * 4, "test": [2] * 4}
    meta, images = synth_waterbirds(0, sizes, size=16)
    y = meta["y"].to_numpy()
    g = 2 * y + meta["s"].to_numpy()
    pool = np.flatnonzero(meta["split"].to_numpy() == "train")
    torch.manual_seed(0)
    model = build_model("resnet18-small", 2)

    def on_epoch(e, row):
        if seen is not None:
            seen.append(e)
        if e == stop_after:
            raise KeyboardInterrupt

    return train(
        model,
        ImageInputs(images),
        y,
        g,
        pool,
        balance(g[pool], "none", None),
        TrainConfig(epochs=epochs, lr=1e-3, batch_size=16),
        seed=1,
        n_groups=4,
        resume=resume,
        on_epoch=on_epoch,
        progress=False,
        input_files=input_files,
        run_params=run_params,
    )


@pytest.mark.parametrize("change", ["none", "pretrained", "params"])
def test_resume_checkpoint_tracks_inputs_and_params(tmp_path, change, capsys):
    pre = tmp_path / "pretrained.pt"
    pre.write_bytes(b"backbone v1")
    ck = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(ck, stop_after=2, input_files=[str(pre), None], run_params={"arch": "resnet18-small", "noise": 0.08})
    assert ck.exists()
    params = {"arch": "resnet18-small", "noise": 0.08}
    if change == "pretrained":
        pre.write_bytes(b"backbone v2")  # pretraining settings changed, backbone rewritten
    elif change == "params":
        params["noise"] = 0.1
    seen: list[int] = []
    capsys.readouterr()
    _train(ck, input_files=[str(pre), None], run_params={**params, "device": "cuda"}, seen=seen)
    out = capsys.readouterr().out
    if change == "none":  # the device is not part of the fingerprint
        assert seen == [2, 3] and "resumed from" in out
    else:
        assert seen == [1, 2, 3] and f"ignoring {ck}" in out


def test_fingerprint_file_small_big_and_folders(tmp_path, monkeypatch):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 1000)
    a = io.fingerprint_file(f)
    assert a.startswith("full:")
    f.write_bytes(b"x" * 499 + b"y" + b"x" * 500)
    assert io.fingerprint_file(f) != a
    # big files: size, mtime and first/last MiB only
    monkeypatch.setattr(io, "FULL_HASH_BYTES", 1000)
    monkeypatch.setattr(io, "_EDGE", 100)
    st = f.stat()
    b = io.fingerprint_file(f)
    assert b.startswith("edges:")
    f.write_bytes(b"x" * 499 + b"z" + b"x" * 500)  # middle byte, same size and mtime: not seen
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert io.fingerprint_file(f) == b
    f.write_bytes(b"x" * 999 + b"z")  # last MiB
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert io.fingerprint_file(f) != b
    f.write_bytes(b"x" * 499 + b"z" + b"x" * 500)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # mtime
    assert io.fingerprint_file(f) != b
    d = tmp_path / "tok"
    d.mkdir()
    (d / "vocab.txt").write_text("a\nb\n")
    c = io.fingerprint_file(d)
    (d / "vocab.txt").write_text("a\nc\n")
    assert c.startswith("dir:") and io.fingerprint_file(d) != c
    assert io.fingerprint_file(tmp_path / "none") == "missing"


# ------------------------------------------------------------ modes follow the umask
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_modes_follow_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        assert io.current_umask() == mask
        io.write_json(tmp_path / "m.json", {"a": 1})
        io.write_csv(tmp_path / "t.csv", pd.DataFrame({"a": [1]}))
        io.save_torch({"x": 1}, tmp_path / "m.pt")
        with io.atomic_path(tmp_path / "e.npy") as tmp:
            np.save(tmp, np.zeros(2))
    finally:
        os.umask(old)
    for name in ("m.json", "t.csv", "m.pt", "e.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


# ------------------------------------------------------------ signed JSON
def test_write_json_signs_and_read_json_verifies(tmp_path):
    p = tmp_path / "m.json"
    obj = {"b": [1, 2.5, None], "a": {"x": (1, 2)}, 3: "int key"}
    io.write_json(p, obj)
    raw = json.loads(p.read_text())
    assert raw["_llr"]["version"] == __import__("llr").__version__ and len(raw["_llr"]["sha256"]) == 64
    assert io.read_json(p, verify_signature=True) == {"b": [1, 2.5, None], "a": {"x": [1, 2]}, "3": "int key"}
    assert io.read_json(p) == io.read_json(p, verify_signature=True)  # key stripped either way
    raw["b"][1] = 2.4  # valid JSON, wrong number
    p.write_text(json.dumps(raw, indent=2))
    with pytest.raises(LLRError) as e:
        io.read_json(p, verify_signature=True)
    _one_line(e, str(p), "does not match")
    del raw["_llr"]
    p.write_text(json.dumps(raw))
    with pytest.raises(LLRError) as e:
        io.read_json(p, verify_signature=True)
    _one_line(e, str(p), "not written by llr")
    p.write_text('{"a": [1, 2')
    with pytest.raises(LLRError) as e:
        io.read_json(p)
    _one_line(e, str(p), "incomplete or not JSON")
