"""Fixtures of the trainer's tests: tiny shard sets with known correspondences (tests/fixtures/toy_shards.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.toy_shards import build_shard_set


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    return build_shard_set(tmp_path_factory.mktemp("shards") / "set", n_groups=6, n_shards=3)
