"""The trainers' shared scaffolding (train/loop.py): the schedule by hand, the log's torn-line trim, the
progress bar of a finished run, the non-finite check and a checkpoint round trip."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from shared.frames import DataError
from train.loop import (NonFiniteLoss, RunLog, load_run_checkpoint, progress_bar, require_finite, restore,
                        save_run_checkpoint, set_lr, warmup_cosine)


def test_warmup_cosine_by_hand():
    t = warmup_cosine(20, 4, [0.01, 0.1], 1e-5)
    assert t.shape == (20, 2)
    assert np.allclose(t[:4, 1], [0.02, 0.04, 0.06, 0.08]) and t[4, 1] == pytest.approx(0.1)
    assert t[4, 0] == pytest.approx(0.01) and t[-1, 0] == pytest.approx(1e-5) and t[-1, 1] == pytest.approx(1e-5)
    assert (np.diff(t[4:], axis=0) <= 0).all()


@pytest.mark.parametrize("total", [2, 3, 6, 10])
def test_every_run_of_two_steps_or_more_warms_up(total):
    t = warmup_cosine(total, 0, [1.0], 0.0)[:, 0]  # asked for no warm-up: a short run gets one step anyway
    assert t[0] == pytest.approx(0.5) and t[1] == pytest.approx(1.0) and t[-1] == pytest.approx(0.0 if total > 2 else 1.0)
    long = warmup_cosine(total, 100, [1.0], 0.0)[:, 0]  # a warm-up longer than the run keeps one cosine step
    assert (np.diff(long) > 0).all() and long[-1] == pytest.approx(1.0)
    assert warmup_cosine(1, 0, [1.0], 0.0).tolist() == [[1.0]]


def test_set_lr_sets_each_group():
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                           {"params": [torch.zeros(1, requires_grad=True)]}], lr=1.0)
    set_lr(opt, np.array([0.1, 0.2]))
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]
    set_lr(opt, 0.3)
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]


def test_run_log_drops_a_torn_line_and_the_redone_steps(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    with RunLog(path, 2) as log:
        log.write({"step": 3, "loss": 0.5})
    recs = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3] and recs[-1]["loss"] == 0.5


def test_a_finished_run_prints_no_bar(capsys):
    bar = progress_bar(5, 5, True)
    bar.update(1)
    bar.close()
    assert capsys.readouterr().err == ""
    bar = progress_bar(5, 4, True)  # a run with a step left shows its bar
    bar.update(1)
    bar.close()
    assert "5/5" in capsys.readouterr().err


def test_require_finite_names_the_steps():
    require_finite([1.0, 2.0], "x")
    with pytest.raises(NonFiniteLoss, match="non-finite loss nan in steps 3..4"):
        require_finite([float("nan")], "in steps 3..4")


@dataclass
class _Cfg:
    a: int = 1


def test_checkpoint_round_trip_restores_model_optimiser_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_run_checkpoint(tmp_path / "c.pt", model, opt, 7, _Cfg(), "key", extra_entry=3)
    after = torch.rand(3)
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    ckpt = load_run_checkpoint(tmp_path / "c.pt", "key")
    assert restore(ckpt, fresh, fresh_opt) == 7 and ckpt["extra_entry"] == 3 and ckpt["config"] == {"a": 1}
    assert torch.equal(torch.rand(3), after)  # the RNG continues where the saved run was
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    with pytest.raises(DataError, match="belongs to config key, not other"):
        load_run_checkpoint(tmp_path / "c.pt", "other")
    assert load_run_checkpoint(tmp_path / "none.pt", "key") is None and restore(None, fresh, fresh_opt) == 0
