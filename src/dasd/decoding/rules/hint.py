"""Hint-decoding: sample from an entropy-weighted geometric mix of reference and base.

Zhang et al., "Towards On-Policy SFT" (arXiv 2602.12222). Each step mixes the two
contexts' log-probabilities, `(1 - lambda) log p_ref + lambda log p_base`, with
`lambda = clamp(beta * H(p_ref) / log V, 0, 1)`: where the reference is sure of itself it
leads, where it hesitates the base model's own distribution takes over. The first token
comes from the reference alone (lambda 0); once the final-answer marker (`\\boxed{`) has
been emitted only the base model decodes (lambda 1). beta = 0 is plain self-distillation.

Unlike the greedy rules this one is stateful (step index, marker seen, random streams),
so it implements the engine's optional hooks `start` and `keep` (see `engine.py`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dasd.decoding.rules.common import Selection, label_emitted, ranked_top_k
from dasd.errors import DasdError


def hint_lambda(ref_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """lambda = clamp(beta * H(p_ref) / log V, 0, 1) per row of `ref_logprobs` [B, V].

    H is the reference entropy in nats; dividing by log V (the entropy of a uniform
    distribution) makes lambda independent of the vocabulary size.
    """
    entropy = torch.special.entr(ref_logprobs.exp()).sum(-1)  # 0 log 0 = 0
    return (beta * entropy / math.log(ref_logprobs.shape[-1])).clamp(0.0, 1.0)


def mix_logprobs(ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor,
                 lam: torch.Tensor) -> torch.Tensor:
    """(1 - lambda) * log p_ref + lambda * log p_base, row-wise ([B, V], lambda [B]).

    Rows at an end point are copied as they are (lambda 0 gives exactly log p_ref, 1
    exactly log p_base), so beta = 0 reproduces the reference tokens bit for bit and a
    -inf in the unused side cannot turn into NaN. The mix is unnormalised (sampling
    normalises it).
    """
    lam = lam.to(ref_logprobs.dtype)[:, None]
    mixed = torch.addcmul(ref_logprobs * (1 - lam), base_logprobs, lam)
    for value, source in ((0, ref_logprobs), (1, base_logprobs)):
        rows = (lam[:, 0] == value).nonzero().squeeze(-1)
        if len(rows):
            mixed[rows] = source[rows]
    return mixed


def nucleus_sample(logits: torch.Tensor, temperature: float, top_p: float,
                   uniforms: torch.Tensor | None,
                   candidates: tuple[int, ...] = (64, 2048)) -> torch.Tensor:
    """One token per row: argmax if `temperature` is 0, else top-p then temperature.

    As in the authors' demo, the nucleus (the most likely tokens, in `ranked_top_k` order,
    while the mass before them is < top_p) is cut on the untempered distribution and the
    survivors are then sharpened by 1/T. The draw is an inverse-CDF lookup of one given
    uniform in [0, 1) per row, so each row's randomness comes from its own stream.
    A full sort of a 49k vocabulary per row and step (as transformers'
    `TopPLogitsWarper` does) costs more than the rest of the rule, so only the top
    `candidates[0]` tokens are ranked, then the next size for rows whose nucleus is
    wider, and the whole vocabulary last; the result is the same.
    """
    if temperature == 0:
        return logits.argmax(-1)
    uniforms = uniforms.to(logits.device, torch.float64)
    tokens = torch.full(logits.shape[:1], -1, dtype=torch.long, device=logits.device)
    for k in (*candidates, logits.shape[-1]):
        wide = (tokens < 0).nonzero().squeeze(-1)
        if not len(wide):
            break
        k = min(k, logits.shape[-1])
        tokens[wide] = _sample_ranked(logits[wide], k, temperature, top_p, uniforms[wide])
    return tokens


def _sample_ranked(logits: torch.Tensor, k: int, temperature: float, top_p: float,
                   uniforms: torch.Tensor) -> torch.Tensor:
    """Sample within the nucleus found among the top k tokens; -1 where it may be wider."""
    full = k == logits.shape[-1]
    if full:  # a stable sort ranks exactly as ranked_top_k, without its top-k detour
        ids = torch.sort(logits, dim=-1, descending=True, stable=True).indices
    else:
        ids = ranked_top_k(logits, k)
    values = logits.gather(-1, ids).double()
    probs = (values - logits.logsumexp(-1, keepdim=True).double()).exp()
    before = probs.cumsum(-1) - probs                      # mass ranked before each token
    kept = before < top_p
    weights = torch.where(kept, ((values - values[:, :1]) / temperature).exp(), 0.0)
    cdf = weights.cumsum(-1)
    targets = uniforms[:, None] * cdf[:, -1:]
    chosen = torch.searchsorted(cdf, targets, right=True).clamp(max=k - 1)
    tokens = ids.gather(-1, chosen).squeeze(-1)
    too_narrow = (probs.sum(-1) < top_p) & (not full)
    return torch.where(too_narrow, -1, tokens)


def row_seed(seed: int, key: object) -> int:
    """A 63-bit seed from (run seed, example key), the same in every process and batch."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class HintRule:
    """Hint-decoding (arXiv 2602.12222) with the authors' demo settings.

    >>> rule = HintRule(beta=3.0, temperature=0.3, top_p=0.95, seed=0)
    >>> rule.start(keys=["ex-1", "ex-2"], decode=tokenizer.decode)  # doctest: +SKIP
    """

    # Sampled and stateful: not a pure function of one step, so draft-and-verify refuses it.
    supports_draft_verify: ClassVar[bool] = False

    beta: float = field(default=3.0, metadata={
        "help": "lambda = clamp(beta * H(p_ref) / log V, 0, 1) mixes in the base model; "
                "0 = plain self-distillation (paper demo: 3)"})
    temperature: float = field(default=0.3, metadata={
        "help": "sampling temperature, 0 = greedy (paper demo: 0.3)"})
    top_p: float = field(default=0.95, metadata={
        "help": "nucleus top-p in (0, 1], cut before the temperature (paper demo: 0.95)"})
    marker: str = field(default="\\boxed{", metadata={
        "help": "once the response contains this text only the base model decodes "
                "(paper demo: \\boxed{; the numeric prompts end with 'The answer is'; "
                "'' = never)"})
    seed: int = field(default=0, metadata={"from_stage": True})  # the stage's seed
    tau: float = field(default=0.2, metadata={
        "help": "labels only: p_base from which a step counts as reserved, not hard (0.2)"})

    def __post_init__(self) -> None:
        checks = (
            ("beta", math.isfinite(self.beta) and self.beta >= 0, "must be >= 0 (paper: 3)"),
            ("temperature", math.isfinite(self.temperature) and self.temperature >= 0,
             "must be >= 0, 0 = greedy (paper: 0.3)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1] (paper: 0.95)"),
            ("tau", 0 < self.tau <= 1, "must be in (0, 1] (paper: 0.2)"),
            ("marker", isinstance(self.marker, str), "must be a string ('' = never switch)"),
            ("seed", isinstance(self.seed, int), "must be an integer"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise DasdError(f"{name} {rule}; got {getattr(self, name)!r}")
        self._rows: list[_RowState] | None = None

    def start(self, keys: Sequence[object],
              decode: Callable[[list[int]], str] | None = None) -> None:
        """Begin a batch: one random stream per example, seeded by (seed, its key)."""
        if self.marker and decode is None:
            raise DasdError("the hint rule needs a decode function to find the marker "
                            f"{self.marker!r}: pass decode= to decode_pairs, or set marker ''")
        self._decode = decode
        self._rows = [_RowState(torch.Generator().manual_seed(row_seed(self.seed, key)))
                      for key in keys]

    def keep(self, indices: torch.Tensor) -> None:
        """Finished examples left the batch: keep the state of the rows still decoding."""
        self._rows = [self._rows[i] for i in indices.tolist()]

    def select(self, ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> Selection:
        if self._rows is None or len(self._rows) != len(ref_logprobs):
            raise DasdError("HintRule.select needs start(keys) for this batch first: "
                            "decode with dasd.decoding.engine.decode_pairs")
        lam = self.step_lambda(ref_logprobs)
        mixed = mix_logprobs(ref_logprobs, base_logprobs, lam)
        uniforms = None
        if self.temperature:
            uniforms = torch.cat([torch.rand(1, generator=r.generator, dtype=torch.float64)
                                  for r in self._rows])
        tokens = nucleus_sample(mixed, self.temperature, self.top_p, uniforms)
        self._advance(tokens.tolist())
        return Selection(tokens, label_emitted(tokens, ref_logprobs, base_logprobs, self.tau))

    def step_lambda(self, ref_logprobs: torch.Tensor) -> torch.Tensor:
        """This step's lambda per row, with the first-token and after-marker overrides."""
        lam = hint_lambda(ref_logprobs, self.beta)
        first = [r.steps == 0 for r in self._rows]
        after = [r.marker_seen for r in self._rows]
        lam = torch.where(torch.tensor(first, device=lam.device), 0.0, lam)
        return torch.where(torch.tensor(after, device=lam.device), 1.0, lam)

    def _advance(self, tokens: list[int]) -> None:
        for row, token in zip(self._rows, tokens, strict=True):
            row.steps += 1
            if self.marker and not row.marker_seen:
                row.see(self._decode([token]), self.marker)


class _RowState:
    """One example's decoding state: steps taken, marker seen, the recent text, its RNG."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.steps = 0
        self.marker_seen = False
        self.tail = ""

    def see(self, piece: str, marker: str) -> None:
        """Append one decoded token; a marker may straddle tokens, so keep its length-1."""
        text = self.tail + piece
        self.marker_seen = marker in text
        self.tail = text[max(0, len(text) - len(marker) + 1):]
