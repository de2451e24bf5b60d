import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture
def shared_datasets() -> Path:
    """The real metadata in ../shared/datasets; skip when absent (a user's clone)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/datasets not present")
    return SHARED


def snakemake_env() -> dict:
    """Environment for snakemake subprocesses: this interpreter's bin first."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env
