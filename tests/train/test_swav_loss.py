"""Sinkhorn marginals and the dense SwAV loss at its two landmarks (perfect agreement, collapse)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from train.sinkhorn import sinkhorn
from train.swav_loss import dense_swav_loss, group_mean, group_swav_loss


def test_sinkhorn_marginals_converge():
    torch.manual_seed(0)
    b, k = 600, 30
    scores = F.normalize(torch.randn(b, k), dim=1)
    q = sinkhorn(scores, 0.05, iterations=200)
    assert q.dtype == torch.float32 and q.shape == (b, k)
    assert torch.allclose(q.sum(1), torch.ones(b), atol=1e-5)  # each feature: a distribution
    assert torch.allclose(q.sum(0), torch.full((k,), b / k), rtol=1e-3)  # equipartition


def test_sinkhorn_three_iterations_rows_exact_columns_balanced():
    torch.manual_seed(1)
    b, k = 512, 16
    # Biased scores: prototype 0 is everybody's favourite, so a plain softmax is unbalanced.
    scores = F.normalize(torch.randn(b, k), dim=1) * 0.5
    scores[:, 0] += 0.5
    soft = torch.softmax(scores / 0.05, dim=1)
    q = sinkhorn(scores, 0.05, 3)
    assert torch.allclose(q.sum(1), torch.ones(b), atol=1e-5)
    dev_soft = (soft.sum(0) - b / k).abs().max()
    dev_q = (q.sum(0) - b / k).abs().max()
    assert dev_q < 0.1 * dev_soft
    assert dev_q / (b / k) < 0.1


def test_sinkhorn_is_fp32_and_overflow_safe():
    # 6 / 0.05 = 120: exp would overflow fp32 (max about e^88) without the max subtraction
    scores = (4.0 + 2.0 * torch.rand(64, 8)).to(torch.bfloat16)
    q = sinkhorn(scores, 0.05, 3)
    assert q.dtype == torch.float32 and torch.isfinite(q).all()
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-4)


def test_group_mean():
    v = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    g = torch.tensor([1, 0, 1])
    m = group_mean(v, g, 2)
    assert torch.allclose(m, torch.tensor([[3.0, 2.0], [3.0, 2.5]]))


def test_loss_near_zero_when_features_sit_on_their_prototypes():
    k, d = 16, 32
    protos = torch.eye(k, d)  # orthonormal unit prototypes
    assign = torch.arange(k).repeat_interleave(8)  # 8 features per prototype: balanced
    z = protos[assign]  # [128, d]
    group = assign.clone()  # each group = the features of one prototype
    loss = group_swav_loss(z @ protos.t(), group, k)
    assert 0 <= loss.item() < 1e-2


def test_loss_is_ln_k_at_collapse():
    k, d = 20, 32
    protos = torch.eye(k, d)
    z = torch.zeros(100, d)
    z[:, d - 1] = 1.0  # every feature identical and orthogonal to all prototypes
    group = torch.arange(100) // 5
    loss = group_swav_loss(z @ protos.t(), group, 20)
    assert abs(loss.item() - math.log(k)) < 1e-4
    # with random prototypes a collapsed batch costs at least ln K (uniform codes vs any softmax)
    torch.manual_seed(2)
    protos = F.normalize(torch.randn(k, d), dim=1)
    z = F.normalize(torch.randn(1, d), dim=1).expand(100, d)
    loss = group_swav_loss(z @ protos.t(), group, 20)
    assert loss.item() >= math.log(k) - 1e-4


def test_group_averaging_changes_the_target():
    """Members of a group are pulled to the consensus code: two features on different prototypes in
    one group cost more than the same features in separate groups."""
    k, d = 8, 8
    protos = torch.eye(k, d)
    z = protos[torch.arange(k).repeat(4)]  # [32, d], balanced
    sep = group_swav_loss(z @ protos.t(), torch.arange(32), 32)
    pairs = torch.arange(32) // 2  # pairs of features on different prototypes
    joined = group_swav_loss(z @ protos.t(), pairs, 16)
    assert joined.item() > sep.item() + 1.0


def test_dense_loss_weights_levels_and_backprops():
    torch.manual_seed(3)
    feats = F.normalize(torch.randn(50, 16), dim=1).requires_grad_()
    protos = F.normalize(torch.randn(10, 16), dim=1)
    pi, pg = torch.arange(0, 20), torch.arange(20) // 2
    ri, rg = torch.arange(20, 50), torch.arange(30) // 10
    t = dense_swav_loss(feats, protos, pi, pg, 10, ri, rg, 3, lam=0.3)
    assert torch.allclose(t.total, 0.3 * t.pixel + 0.7 * t.region)
    t.total.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    only_pix = dense_swav_loss(feats, protos, pi, pg, 10, ri, rg, 3, lam=1.0)
    assert only_pix.region.item() == 0.0 and torch.allclose(only_pix.total, only_pix.pixel)


def test_distributed_share_of_a_single_rank_is_the_mean_and_an_empty_rank_stays_on_the_graph():
    """Distributed form without a process group (one rank): its share is the whole mean. With no
    samples it still runs to the end and returns a zero whose backward reaches the features (so a
    rank without positives joins every all-reduce, DDP's gradient one included)."""
    torch.manual_seed(4)
    feats = F.normalize(torch.randn(40, 16), dim=1).requires_grad_()
    protos = F.normalize(torch.randn(10, 16), dim=1)
    s = feats @ protos.t()
    group = torch.arange(40) // 4
    assert torch.allclose(group_swav_loss(s, group, 10, distributed=True), group_swav_loss(s, group, 10), rtol=1e-6)
    empty = group_swav_loss(s[:0], group[:0], 0, distributed=True)
    assert empty.item() == 0.0
    empty.backward()
    assert feats.grad is not None and torch.equal(feats.grad, torch.zeros_like(feats))
