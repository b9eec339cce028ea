"""On-policy loss formulas against values worked out by hand on 2-3-token vocabularies.

Distributions used below (logits = log p, so softmax gives p back):
T = (0.8, 0.2), S = (0.5, 0.5), S2 = (0.9, 0.1).
Forward KL(T||S) = 0.8 ln 1.6 + 0.2 ln 0.4 = 0.376003 - 0.183258 = 0.192745.
Reverse KL(S||T) = 0.5 ln 0.625 + 0.5 ln 2.5 = -0.235002 + 0.458145 = 0.223144.
JSD(beta 0.5): m = (0.65, 0.35); terms 0.5 [0.8 ln(0.8/0.65) + 0.5 ln(0.5/0.65)] = 0.017465
and 0.5 [0.2 ln(0.2/0.35) + 0.5 ln(0.5/0.35)] = 0.033207; sum 0.050672.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from dasd.errors import DasdError
from dasd.training.losses import (
    da_opsd_loss,
    direction_stats,
    direction_weights,
    opsd_loss,
    position_weights,
    pw_opsd_loss,
    sign_direction,
    tanh_direction,
    token_divergence,
)

T, S, S2 = (0.8, 0.2), (0.5, 0.5), (0.9, 0.1)


def logits(*rows) -> torch.Tensor:
    """[B, T, V] logits from nested probabilities: logits(((p..), (p..)), ((p..),))."""
    return torch.log(torch.tensor(rows, dtype=torch.float64))


def one(p) -> torch.Tensor:
    return logits((p,))


@pytest.mark.parametrize("beta, clip, expected", [
    (0.0, None, 0.192745), (0.0, 0.05, 0.05 - 0.183258),       # forward KL; clip caps 0.376
    (1.0, None, 0.223144), (1.0, 0.05, -0.235002 + 0.05),      # reverse KL; clip caps 0.458
    (0.5, None, 0.050672), (0.5, 0.05, 0.050672),              # both terms < 0.05: no effect
])
def test_divergence_per_token_by_hand(beta, clip, expected):
    value = token_divergence(one(S), one(T), beta, clip)
    assert value.shape == (1, 1)
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_three_token_vocabulary_forward_kl_and_clip():
    # KL((.5,.3,.2) || (.2,.3,.5)) = 0.5 ln 2.5 + 0 + 0.2 ln 0.4 = 0.458145 - 0.183258
    student, teacher = one((0.2, 0.3, 0.5)), one((0.5, 0.3, 0.2))
    assert token_divergence(student, teacher, 0.0, None).item() == pytest.approx(0.274887, abs=1e-6)
    assert token_divergence(student, teacher, 0.0, 0.05).item() == pytest.approx(
        0.05 - 0.183258, abs=1e-6)


def test_beta_zero_is_torch_forward_kl():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    per_token = F.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), reduction="none",
                         log_target=True).sum(-1)
    expected = per_token[mask.bool()].mean()
    assert opsd_loss(student, teacher, mask, beta=0.0, clip=None).item() == pytest.approx(
        expected.item(), rel=1e-6)


def test_opsd_mean_is_over_masked_tokens_of_the_whole_batch():
    # Row 0: tokens (S vs T), (T vs T), padding; row 1: (S2 vs T), padding, padding.
    student = logits((S, T, S2), (S2, S, S))
    teacher = logits((T, T, T), (T, T, T))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # forward KL: 0.192745, 0, and KL(T||S2) = 0.8 ln(8/9) + 0.2 ln 2 = 0.044403 -> mean of 3
    expected = (0.192745 + 0.0 + 0.044403) / 3
    assert opsd_loss(student, teacher, mask, beta=0.0, clip=None).item() == pytest.approx(
        expected, abs=1e-6)


def test_position_weights_use_each_sequence_length():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    weights = position_weights(mask)  # defaults w_min 0.25, tau 0.30, s 0.10
    # L=2: f = 0.25, 0.75 -> 0.25 + 0.75 sigmoid(-0.5), 0.25 + 0.75 sigmoid(4.5)
    # L=1: f = 0.5 -> 0.25 + 0.75 sigmoid(2)
    expected = torch.tensor([[0.533156, 0.991760, 0.0], [0.910598, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(weights.double(), expected.double(), atol=1e-6)


def test_pw_opsd_per_sequence_weighted_mean_then_batch_mean():
    student = logits((S, S2, S), (S, S, S), (S, S, S))
    teacher = logits((T, T, T), (T, T, T), (T, T, T))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # the empty row is not counted
    seq0 = (0.533156 * 0.192745 + 0.991760 * 0.044403) / 2
    seq1 = 0.910598 * 0.192745 / 1
    loss = pw_opsd_loss(student, teacher, mask, beta=0.0, clip=None)
    assert loss.item() == pytest.approx((seq0 + seq1) / 2, abs=1e-6)
    # With the clip: token S vs T becomes 0.05 - 0.183258; S2 vs T terms are
    # 0.8 ln(8/9) = -0.094226 and 0.2 ln 2 = 0.138629 -> -0.094226 + 0.05
    c1, c2 = 0.05 - 0.183258, -0.094226 + 0.05
    clipped = ((0.533156 * c1 + 0.991760 * c2) / 2 + 0.910598 * c1) / 2
    assert pw_opsd_loss(student, teacher, mask).item() == pytest.approx(clipped, abs=1e-6)


def test_tanh_direction_weights_by_hand():
    entropy = torch.tensor([[0.1, 0.5, 0.9], [0.1, 0.5, 0.9]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    omega = tanh_direction(entropy, mask, 0.2)
    # row 0: q_0.2 of (0.1, 0.5, 0.9) = 0.1 + 0.4 * 0.4 = 0.26, MAD = 0.8 / 3
    assert omega[0].tolist() == pytest.approx(
        [math.tanh(0.6), math.tanh(-0.9), math.tanh(-2.4)], abs=1e-9)
    # row 1 sees (0.1, 0.5) only: q = 0.18, MAD = 0.2
    assert omega[1, :2].tolist() == pytest.approx([math.tanh(0.4), math.tanh(-1.6)], abs=1e-9)
    assert sign_direction(entropy, mask, 0.2)[0].tolist() == [1.0, -1.0, -1.0]


def test_direction_weights_flip_sign_at_the_quantile():
    # H(S) = ln 2 = 0.693147 (high), H(S2) = 0.325083 (low); q_0.2 = 0.398696, MAD = 0.184032
    student, mask = logits((S, S2)), torch.tensor([[1, 1]])
    omega = direction_weights(student, mask, rho=0.2)
    assert omega[0].tolist() == pytest.approx([math.tanh(-1.6), math.tanh(0.4)], abs=1e-6)
    # rho = 1 puts the quantile at the largest entropy: every token is pulled (>= 0).
    assert (direction_weights(student, mask, rho=1.0) >= 0).all()
    assert (direction_weights(student, mask, rho=0.0) <= 0).all()


def test_da_loss_by_hand_and_gradient_direction():
    student = logits((S, S2)).requires_grad_(True)
    teacher, mask = logits((T, T)), torch.tensor([[1, 1]])
    loss = da_opsd_loss(student, teacher, mask, beta=0.0, clip=None, rho=0.2)
    expected = (math.tanh(-1.6) * 0.192745 + math.tanh(0.4) * 0.044403) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    stepped = (student - 1.0 * student.grad).detach()
    before = token_divergence(student.detach(), teacher, 0.0, None)[0]
    after = token_divergence(stepped, teacher, 0.0, None)[0]
    assert after[0] > before[0], "high-entropy token must be pushed away from the teacher"
    assert after[1] < before[1], "low-entropy token must be pulled toward the teacher"


def test_push_cap_stops_the_push_and_leaves_the_pull():
    # D (forward KL to T) = 0.192745 on the pushed S token, 0.044403 on the pulled S2 token
    student = logits((S, S2)).requires_grad_(True)
    teacher, mask = logits((T, T)), torch.tensor([[1, 1]])
    capped = da_opsd_loss(student, teacher, mask, beta=0.0, clip=None, rho=0.2, push_cap=0.1)
    expected = (math.tanh(-1.6) * 0.1 + math.tanh(0.4) * 0.044403) / 2
    assert capped.item() == pytest.approx(expected, abs=1e-6)
    capped.backward()
    assert student.grad[0, 0].abs().max() == 0, "beyond the cap the push has no gradient"
    assert student.grad[0, 1].abs().max() > 0, "the pulled token is never capped"
    # a cap above the token's divergence changes nothing
    wide = da_opsd_loss(student.detach(), teacher, mask, 0.0, None, 0.2, push_cap=0.5)
    plain = da_opsd_loss(student.detach(), teacher, mask, 0.0, None, 0.2)
    assert wide.item() == pytest.approx(plain.item(), abs=1e-12)
    with pytest.raises(DasdError, match="push_cap must be > 0"):
        da_opsd_loss(student.detach(), teacher, mask, push_cap=0.0)


def test_direction_stats_by_hand():
    # one rollout (S, S2, padding): S pushed, S2 pulled; the padded position counts nowhere
    student, teacher = logits((S, S2, S)), logits((T, T, T))
    mask = torch.tensor([[1, 1, 0]])
    stats = direction_stats(student, teacher, mask, beta=0.0, clip=None, rho=0.2)
    assert stats["pulled"].item() == pytest.approx(0.5)
    assert stats["pushed"].item() == pytest.approx(0.5)
    expected = (math.tanh(-1.6) * 0.192745 + math.tanh(0.4) * 0.044403) / 2
    assert stats["signed_divergence"].item() == pytest.approx(expected, abs=1e-6)
    # rho = 1: the quantile is the largest entropy, so the high-entropy token sits on it
    everything = direction_stats(student, teacher, mask, beta=0.0, clip=None, rho=1.0)
    assert (everything["pulled"].item(), everything["pushed"].item()) == (0.5, 0.0)


def test_teacher_gets_no_gradient_and_identical_distributions_give_zero():
    student = logits((S, S2)).requires_grad_(True)
    teacher = logits((S, S2)).requires_grad_(True)
    loss = opsd_loss(student, teacher.detach(), torch.ones(1, 2), beta=0.5)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert teacher.grad is None


@pytest.mark.parametrize("call, message", [
    (lambda: token_divergence(one(S), one(T), 1.5), "beta must be in"),
    (lambda: direction_weights(one(S), torch.ones(1, 1), form="cosine"), "unknown direction"),
    (lambda: direction_weights(one(S), torch.ones(1, 1), rho=2.0), "rho"),
])
def test_bad_arguments_are_one_line_errors(call, message):
    with pytest.raises(DasdError, match=message):
        call()


@pytest.mark.parametrize("loss", ["opsd", "pw", "da"])
def test_chunked_divergence_changes_no_number(monkeypatch, loss):
    """Memory-bounded: positions in chunks of a few rows, recomputed in backward, give the
    same loss and the same student gradient as one pass over the whole batch."""
    from dasd.training import losses

    torch.manual_seed(0)
    student = torch.randn(3, 7, 50, dtype=torch.float64)
    teacher = torch.randn(3, 7, 50, dtype=torch.float64)
    mask = (torch.rand(3, 7) > 0.3).double()
    fn = {"opsd": lambda s: losses.opsd_loss(s, teacher, mask, 0.5, 0.05),
          "pw": lambda s: losses.pw_opsd_loss(s, teacher, mask, 0.0, None),
          "da": lambda s: losses.da_opsd_loss(s, teacher, mask, 0.5, 0.05, push_cap=1.0)}[loss]
    results = []
    for entries in (10**9, 4 * 50 + 7):  # whole, then chunks of 4 positions (the last of 1)
        monkeypatch.setattr(losses, "CHUNK_ENTRIES", entries)
        leaf = student.clone().requires_grad_()
        value = fn(leaf)
        value.backward()
        results.append((value.detach(), leaf.grad))
    (whole, whole_grad), (chunked, chunked_grad) = results
    assert torch.allclose(whole, chunked, rtol=1e-12) and whole_grad.abs().sum() > 0
    assert torch.allclose(whole_grad, chunked_grad, rtol=1e-10, atol=1e-14)


def test_chunking_bounds_the_rows_per_chunk(monkeypatch):
    from dasd.training import losses

    seen = []
    monkeypatch.setattr(losses, "CHUNK_ENTRIES", 100)
    losses.per_position(lambda x: seen.append(x.shape[0]) or x.sum(-1), torch.ones(2, 5, 30))
    assert seen == [3, 3, 3, 1]
