"""Loss formulas of the on-policy self-distillation methods, as pure tensor functions.

Every function takes the student's and the teacher's next-token logits on the rollout
positions, `[B, T, V]`, and a 0/1 `mask` `[B, T]` of the positions that count (the
rollout tokens; padding is 0). The teacher logits carry no gradient (the trainer computes
them under `no_grad`); everything here is differentiable in the student logits only.

- OPSD (arXiv 2601.18734): generalized JSD with `beta`, each per-vocabulary-entry term
  capped at `clip` before the vocabulary sum, mean over the masked tokens.
- PW-OPSD (arXiv 2605.21606): the same divergence (forward KL) times a position weight
  that grows along the rollout; per-sequence sum divided by that sequence's length, then
  the mean over sequences.
- Direction-adaptive (arXiv 2605.22263): a signed per-token weight from the student's
  entropy, positive (pull toward the teacher) below a per-rollout entropy quantile and
  negative (push away) above it; the form is one entry of `DIRECTION_WEIGHTS`, and the
  push can stop at a divergence `push_cap`. `da-opsd` adds it to TRL's GRPO loss on the
  task's reward (`dasd.training.onpolicy.da_opsd`); `direction_stats` says what it did.

The generalized JSD is written once (`divergence_terms`); TRL writes it twice
(`gkd_trainer.generalized_jsd_loss`, `sdft/loss_utils.compute_divergence`), with the same
convention, which is the one used here: `m = beta * p_T + (1 - beta) * p_S`,
`JSD = beta * KL(p_T || m) + (1 - beta) * KL(p_S || m)`, and the end points defined as
the two KLs: beta = 0 is the forward KL(p_T || p_S), beta = 1 the reverse KL(p_S || p_T).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dasd.errors import DasdError

Tensor = torch.Tensor


def _kl_terms(log_p: Tensor, log_q: Tensor) -> Tensor:
    """p_v * (log p_v - log q_v) per vocabulary entry (summing them gives KL(p || q))."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True)


def divergence_terms(student_logits: Tensor, teacher_logits: Tensor, beta: float) -> Tensor:
    """Per-vocabulary-entry terms `[B, T, V]` of the generalized JSD (see module docstring)."""
    if not 0 <= beta <= 1:
        raise DasdError(f"beta must be in [0, 1] (0 forward KL, 1 reverse KL); got {beta}")
    log_s = torch.log_softmax(student_logits, dim=-1)
    log_t = torch.log_softmax(teacher_logits, dim=-1)
    if beta == 0:
        return _kl_terms(log_t, log_s)
    if beta == 1:
        return _kl_terms(log_s, log_t)
    log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log1p(-beta)]),
                            dim=0)
    return beta * _kl_terms(log_t, log_m) + (1 - beta) * _kl_terms(log_s, log_m)


# The most vocabulary-wide entries one chunk of positions may hold (a float32 `[rows, V]`
# intermediate of 32 MB; a divergence makes about a dozen): see `per_position`.
CHUNK_ENTRIES = 2**23


def per_position(fn: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
    """`fn` (`[N, V]` tensors -> `[N]`) over the positions of `[..., V]` tensors, in chunks of
    at most `CHUNK_ENTRIES` entries.

    A divergence makes about a dozen float32 copies of the logits (two log-softmaxes, the
    mixture, the terms, their gradients); chunked, they never exceed one chunk's, whatever
    the rollout length and vocabulary (152k entries for Qwen3). The backward pass
    recomputes each chunk and writes its gradient into one buffer per input. Each
    position's value is computed by the same operations either way."""
    lead, vocab = tensors[0].shape[:-1], tensors[0].shape[-1]
    flat = [t.reshape(-1, vocab) for t in tensors]
    rows = max(1, CHUNK_ENTRIES // vocab)
    if flat[0].shape[0] <= rows:
        return fn(*flat).reshape(lead)
    return _Chunked.apply(fn, rows, *flat).reshape(lead)


class _Chunked(torch.autograd.Function):
    """`per_position`'s chunks: forward without keeping intermediates, backward by
    recomputing one chunk at a time."""

    @staticmethod
    def forward(ctx, fn, rows, *flat):
        ctx.fn, ctx.rows = fn, rows
        ctx.save_for_backward(*flat)
        return torch.cat([fn(*(t[start:start + rows] for t in flat))
                          for start in range(0, flat[0].shape[0], rows)])

    @staticmethod
    def backward(ctx, grad_out):
        flat, rows = ctx.saved_tensors, ctx.rows
        wanted = ctx.needs_input_grad[2:]
        grads = [torch.empty_like(t) if want else None for t, want in zip(flat, wanted,
                                                                         strict=True)]
        for start in range(0, flat[0].shape[0], rows):
            chunk = [t[start:start + rows].detach().requires_grad_(want)
                     for t, want in zip(flat, wanted, strict=True)]
            with torch.enable_grad():
                out = ctx.fn(*chunk)
            inputs = [c for c, want in zip(chunk, wanted, strict=True) if want]
            parts = iter(torch.autograd.grad(out, inputs, grad_out[start:start + rows]))
            for grad in grads:
                if grad is not None:
                    grad[start:start + rows] = next(parts)
        return (None, None, *grads)


def token_divergence(student_logits: Tensor, teacher_logits: Tensor, beta: float,
                     clip: float | None = 0.05) -> Tensor:
    """Divergence per position `[B, T]`: each vocabulary term capped at `clip` (None: no cap),
    then summed. The cap keeps a few stylistic tokens from carrying the whole update.
    Memory-bounded: computed `per_position`."""
    def clipped_sum(student: Tensor, teacher: Tensor) -> Tensor:
        terms = divergence_terms(student, teacher, beta)
        return (terms if clip is None else terms.clamp(max=clip)).sum(-1)

    return per_position(clipped_sum, student_logits, teacher_logits)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over the positions where `mask` is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def opsd_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, beta: float = 0.5,
              clip: float | None = 0.05) -> Tensor:
    """OPSD: clipped generalized JSD, averaged over every masked token of the batch."""
    return masked_mean(token_divergence(student_logits, teacher_logits, beta, clip), mask)


def position_weights(mask: Tensor, w_min: float = 0.25, tau: float = 0.30,
                     s: float = 0.10) -> Tensor:
    """PW-OPSD weights `w_t = w_min + (1 - w_min) * sigmoid((f_t - tau) / s)`, 0 off the mask.

    `f_t = (t - 0.5) / L`: t is the 1-based index of the token among that sequence's masked
    tokens and L their number, so a short rollout in a padded batch is weighted by its own
    length. Late tokens weigh more: early tokens mostly copy the teacher's style.
    """
    mask = mask if mask.is_floating_point() else mask.to(torch.get_default_dtype())
    t = torch.cumsum(mask, dim=-1)
    length = mask.sum(-1, keepdim=True).clamp(min=1.0)
    f = (t - 0.5) / length
    return (w_min + (1 - w_min) * torch.sigmoid((f - tau) / s)) * mask


def pw_opsd_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor,
                 beta: float = 0.0, clip: float | None = 0.05, w_min: float = 0.25,
                 tau: float = 0.30, s: float = 0.10) -> Tensor:
    """PW-OPSD: per sequence sum_t w_t D_t / L, then the mean over sequences with L > 0."""
    divergence = token_divergence(student_logits, teacher_logits, beta, clip)
    weights = position_weights(mask, w_min, tau, s).to(divergence.dtype)
    length = mask.to(divergence.dtype).sum(-1)
    per_sequence = (weights * divergence).sum(-1) / length.clamp(min=1.0)
    has_tokens = (length > 0).to(divergence.dtype)
    return (per_sequence * has_tokens).sum() / has_tokens.sum().clamp(min=1.0)


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy in nats of softmax(logits) per position `[B, T]` (`per_position`)."""
    def entropy(chunk: Tensor) -> Tensor:
        log_p = torch.log_softmax(chunk, dim=-1)
        return -(log_p.exp() * log_p).sum(-1)

    return per_position(entropy, logits)


def _row_statistics(entropy: Tensor, mask: Tensor, rho: float) -> tuple[Tensor, Tensor]:
    """Per rollout: the rho-quantile of H (linear interpolation) and its mean absolute
    deviation, over that rollout's masked tokens; shapes `[B, 1]`."""
    quantiles, spreads = [], []
    for row, keep in zip(entropy, mask.bool(), strict=True):
        values = row[keep]
        if values.numel() == 0:
            values = row.new_zeros(1)
        quantiles.append(torch.quantile(values, rho))
        spreads.append((values - values.mean()).abs().mean())
    return torch.stack(quantiles).unsqueeze(-1), torch.stack(spreads).unsqueeze(-1)


def tanh_direction(entropy: Tensor, mask: Tensor, rho: float) -> Tensor:
    """`omega_t = tanh((q_rho - H_t) / sigma_H)`: smooth, near +-1 far from the quantile,
    0 at it; sigma_H (mean absolute deviation of H in the rollout) makes it scale-free."""
    quantile, spread = _row_statistics(entropy, mask, rho)
    return torch.tanh((quantile - entropy) / spread.clamp(min=1e-6))


def sign_direction(entropy: Tensor, mask: Tensor, rho: float) -> Tensor:
    """`omega_t = sign(q_rho - H_t)`: +1 below the quantile, -1 above, 0 on it."""
    quantile, _ = _row_statistics(entropy, mask, rho)
    return torch.sign(quantile - entropy)


# The paper (no public code) confirms only the direction rule; the form is swappable.
DIRECTION_WEIGHTS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "tanh": tanh_direction, "sign": sign_direction}


def direction_weights(student_logits: Tensor, mask: Tensor, rho: float = 0.2,
                      form: str = "tanh") -> Tensor:
    """Signed weights `[B, T]` from the (detached) student entropy, 0 off the mask."""
    if form not in DIRECTION_WEIGHTS:
        raise DasdError(f"unknown direction weight '{form}': choose one of "
                        f"{', '.join(DIRECTION_WEIGHTS)}")
    if not 0 <= rho <= 1:
        raise DasdError(f"rho (entropy quantile) must be in [0, 1]; got {rho}")
    entropy = token_entropy(student_logits.detach())
    return DIRECTION_WEIGHTS[form](entropy, mask, rho) * mask.to(entropy.dtype)


def da_opsd_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor,
                 beta: float = 0.5, clip: float | None = 0.05, rho: float = 0.2,
                 form: str = "tanh", push_cap: float | None = None) -> Tensor:
    """Direction-adaptive: mean over masked tokens of omega_t * D_t. A negative omega makes
    descending the loss raise D_t, i.e. push that token away from the teacher.

    `push_cap` (None: no cap) bounds the push: a pushed token counts min(D_t, push_cap), so
    its gradient stops once it is `push_cap` nats from the teacher. Uncapped, the loss
    falls without bound below zero as the pushed tokens move ever further away (the
    student's answers fall apart); pulled tokens are never capped."""
    divergence = token_divergence(student_logits, teacher_logits, beta, clip)
    omega = direction_weights(student_logits, mask, rho, form).to(divergence.dtype)
    if push_cap is not None:
        if not push_cap > 0:
            raise DasdError(f"push_cap must be > 0, or none for no cap; got {push_cap}")
        divergence = torch.where(omega < 0, divergence.clamp(max=push_cap), divergence)
    return masked_mean(omega * divergence, mask)


def direction_stats(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor,
                    beta: float = 0.5, clip: float | None = 0.05, rho: float = 0.2,
                    form: str = "tanh") -> dict[str, Tensor]:
    """What the entropy routing did on a batch: the shares of masked tokens `pulled`
    toward the teacher (omega > 0) and `pushed` away (omega < 0; tokens exactly at the
    quantile are neither), and the `signed_divergence`, `da_opsd_loss` uncapped (mean of
    omega_t * D_t: below zero when the pushed tokens outweigh the pulled)."""
    with torch.no_grad():
        omega = direction_weights(student_logits, mask, rho, form)
        keep = mask.bool()
        count = keep.sum().clamp(min=1)
        return {"pulled": ((omega > 0) & keep).sum() / count,
                "pushed": ((omega < 0) & keep).sum() / count,
                "signed_divergence": da_opsd_loss(student_logits, teacher_logits, mask, beta,
                                                  clip, rho, form)}
