"""Shared test fixtures: where the team's real sample data lives (outside the project)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never compete with each other for threads on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

SAMPLE_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def sample_data() -> Path:
    if not SAMPLE_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SAMPLE_DATA} (it ships beside the project, not in it)")
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def tiny_city(tmp_path_factory) -> Path:
    """The tiny synthetic city (2 sequences x 6 frames at 96x192), rendered once per session; tests
    that change it copy it first."""
    from preprocess.synth import generate_preset

    root = tmp_path_factory.mktemp("city") / "city-tiny"
    generate_preset(root, "tiny")
    return root
