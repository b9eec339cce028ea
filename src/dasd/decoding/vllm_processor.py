"""The vLLM class of lockstep DASD's logits processor: a thin shell around
`dasd.decoding.vllm_lockstep_engine.RequestProcessor`, imported only where vLLM is
(`load_lockstep_llm` passes it to `vllm.LLM(logits_processors=...)`)."""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor

from dasd.decoding.vllm_backend import load_vllm
from dasd.decoding.vllm_lockstep_engine import RequestProcessor, check_vllm_version


class LockstepProcessor(LogitsProcessor):
    """vLLM's batch-level logits processor around `RequestProcessor`."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        tokenizer = _tokenizer(vllm_config)
        self.inner = RequestProcessor(tokenizer.decode if tokenizer is not None else None)

    def is_argmax_invariant(self) -> bool:
        return False  # it forces tokens: it must run on all-greedy batches too

    def update_state(self, batch_update: Any) -> None:
        self.inner.update_state(batch_update)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.inner.apply(logits)


def _tokenizer(vllm_config: Any) -> Any:
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(vllm_config.model_config.tokenizer)
    except Exception:  # a rule that watches text (hint's marker) then refuses to start
        return None


def load_lockstep_llm(model: str, max_logprobs: int = 20, **kwargs: Any) -> Any:
    """`load_vllm` with the lockstep processor (the version checked first); its prefix
    caching lets a pair decoded again reuse its prompts' blocks."""
    import vllm

    check_vllm_version(vllm.__version__)
    return load_vllm(model, max_logprobs, logits_processors=[LockstepProcessor], **kwargs)
