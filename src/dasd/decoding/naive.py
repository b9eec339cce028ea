"""A deliberately plain decoder: one example at a time, no cache, no padding.

Each step re-encodes both full contexts. It is the oracle the batched engine is tested
against and the naive peer in the benchmarks; it is far too slow for real data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dasd.decoding.engine import FINISH_EOS, TokenTrace, record_step, step_statistics
from dasd.decoding.rules import SelectionRule


def _next_logprobs(model, ids: list[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits
    return torch.log_softmax(logits[:, -1].float(), dim=-1)


@torch.inference_mode()
def naive_decode(model, ref_prompt: Sequence[int], base_prompt: Sequence[int],
                 rule: SelectionRule, eos_ids: Sequence[int], max_new_tokens: int) -> TokenTrace:
    trace = TokenTrace()
    for _ in range(max_new_tokens):
        ref_lp = _next_logprobs(model, [*ref_prompt, *trace.token_ids])
        base_lp = _next_logprobs(model, [*base_prompt, *trace.token_ids])
        selection = rule.select(ref_lp, base_lp)
        stats = step_statistics(ref_lp, base_lp, selection.tokens).tolist()[0]
        token = int(selection.tokens[0])
        record_step(trace, token, int(selection.categories[0]), stats)
        if token in eos_ids:
            trace.finish_reason = FINISH_EOS
            break
    return trace
