"""shared.stage.run_stage, the one way a stage starts another in a process of its own: the command runs
from the project root, its output lands in the log after the command line, this process's kill points
stay here, and a failure names what was to be made, the command and the log."""
from __future__ import annotations

import pytest

from shared.frames import DataError
from shared.stage import run_stage


def test_output_goes_to_the_log_after_the_command_line(tmp_path):
    log = tmp_path / "log.txt"
    run_stage("preprocess", "synth", ["--help"], tmp_path, log)
    text = log.read_text()
    assert text.splitlines()[0].endswith("-m preprocess synth --help") and "--demo-size" in text


def test_a_failing_stage_names_what_it_was_to_make_the_command_and_the_log(tmp_path):
    log = tmp_path / "log.txt"
    with pytest.raises(DataError, match=r"`python -m train no-such-command` exited 2; its output is in") as e:
        run_stage("train", "no-such-command", [], tmp_path / "target", log)
    assert e.value.path == str(tmp_path / "target") and "No such command" in log.read_text()


def test_kill_points_are_not_passed_on(tmp_path, monkeypatch):
    # a kill point set for this process would kill the child at its first atomic write instead
    monkeypatch.setenv("CPCDR_KILL_AT", "1")
    log = tmp_path / "log.txt"
    run_stage("preprocess", "synth", ["--dataset", "synthetic", "--data-root", str(tmp_path / "city"),
                                      "--sequences", "1", "--frames", "3", "--size", "32x64"], tmp_path, log)
    assert (tmp_path / "city").is_dir()
