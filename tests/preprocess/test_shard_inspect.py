"""`python -m preprocess inspect`: the contact sheet is drawn once per shard set and config, and drawn
again when the shard set changes (tests/preprocess/test_shards.py checks the sheet itself)."""
from __future__ import annotations

import json

from click.testing import CliRunner

from preprocess.__main__ import main
from tests.fixtures.toy_shards import build_shard_set


def test_rerun_reuses_the_sheet_until_the_shard_set_changes(tmp_path):
    shards = build_shard_set(tmp_path / "shards", n_groups=2, n_shards=1, h=32, w=64)
    args = ["inspect", "--shards", str(shards), "--out", str(tmp_path / "runs"), "--tile-width", "64"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    sheet = shards / "inspect" / "e00_g0000000.png"  # no --key: the first group of the first shard
    record = sheet.with_suffix(".done.json")
    assert f"-> {sheet}" in first.output and json.loads(record.read_text())["outputs"] == {
        "e00_g0000000.png": [sheet.stat().st_size, sheet.stat().st_mtime_ns]}
    stamp = sheet.stat().st_mtime_ns

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert again.output.strip() == f"inspect: reusing {sheet} (inputs unchanged; --force to recompute)"
    assert sheet.stat().st_mtime_ns == stamp

    other = CliRunner().invoke(main, args + ["--lines", "2"])  # another config draws the same file again
    assert other.exit_code == 0 and "reusing" not in other.output
    stamp = sheet.stat().st_mtime_ns
    assert "reusing" in CliRunner().invoke(main, args + ["--lines", "2"]).output

    build_shard_set(shards, n_groups=2, n_shards=1, h=32, w=64, seed=1)  # other groups, other checksums
    changed = CliRunner().invoke(main, args + ["--lines", "2"])
    assert changed.exit_code == 0 and "reusing" not in changed.output and sheet.stat().st_mtime_ns != stamp
    forced = CliRunner().invoke(main, args + ["--lines", "2", "--force"])
    assert forced.exit_code == 0 and "reusing" not in forced.output
