"""Plain decoding of one context with `model.generate` (or vLLM): the loop evaluation
samples and greedy-decodes answers with, and the peer the decoding benchmarks time the
engines against. Every decoding setting is passed explicitly."""

from __future__ import annotations

import torch

from dasd.decoding.cache import generation_cache
from dasd.decoding.vllm_model import VLLMModel


def generate_batch(model, tokenizer, prompts_ids: list[list[int]], max_new_tokens: int,
                   eos_ids: list[int], *, do_sample: bool = False, temperature: float = 1.0,
                   top_p: float = 1.0, top_k: int = 0, num_return_sequences: int = 1,
                   seed: int | None = None, in_place_cache: bool = True
                   ) -> list[tuple[list[int], str]]:
    """Decode a batch of token-id prompts with `model.generate` (left padding, KV cache:
    the engines' in-place one unless `in_place_cache` is False).

    Returns `(token_ids, finish_reason)` per sequence, prompt-major when
    `num_return_sequences` > 1 (prompt 0's sequences first). `token_ids` end with the EOS
    id when `finish_reason` is "eos"; "length" means the `max_new_tokens` cap was hit.
    Every decoding setting is passed explicitly, so a model's own generation defaults
    (repetition penalty, top-k 50, sampling on) never leak into an evaluation. Sampling is
    seeded with `transformers.set_seed`, since `generate` takes no `torch.Generator`.
    """
    from transformers import GenerationConfig, set_seed

    if isinstance(model, VLLMModel):
        return model.answer(prompts_ids, max_new_tokens, eos_ids, do_sample=do_sample,
                            temperature=temperature, top_p=top_p, top_k=top_k,
                            num_return_sequences=num_return_sequences, seed=seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    width = max(len(ids) for ids in prompts_ids)
    input_ids = torch.full((len(prompts_ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompts_ids):  # left padding: every prompt ends at column -1
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
    settings = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=do_sample, num_beams=1,
        num_return_sequences=num_return_sequences, eos_token_id=list(eos_ids),
        pad_token_id=pad_id, repetition_penalty=1.0, no_repeat_ngram_size=0, use_cache=True,
        **({"temperature": temperature, "top_p": top_p, "top_k": top_k} if do_sample else {}))
    if do_sample and seed is not None:
        set_seed(seed)
    device = getattr(model, "device", torch.device("cpu"))
    cache = generation_cache(model, room=min(max_new_tokens, 256)) if in_place_cache else None
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids.to(device),
                                attention_mask=attention_mask.to(device),
                                generation_config=settings, **({"cache": cache} if cache else {}))
    return [_cut_at_eos(row[width:].tolist(), eos_ids) for row in output]


def generate_greedy(model, tokenizer, prompts_ids: list[list[int]], max_new_tokens: int,
                    eos_ids: list[int], in_place_cache: bool = True
                    ) -> list[tuple[list[int], str]]:
    """Greedy `generate_batch`: one `(token_ids, finish_reason)` per prompt."""
    return generate_batch(model, tokenizer, prompts_ids, max_new_tokens, eos_ids,
                          in_place_cache=in_place_cache)


def _cut_at_eos(new_ids: list[int], eos_ids: list[int]) -> tuple[list[int], str]:
    """Keep tokens up to and including the first EOS; the padding after it goes."""
    eos = set(eos_ids)
    for i, token in enumerate(new_ids):
        if token in eos:
            return new_ids[: i + 1], "eos"
    return new_ids, "length"
