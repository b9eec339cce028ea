"""A model served by vLLM, as `dasd generate --engine vllm` and `dasd eval --backend vllm`
use it: the `LLM`, the model's own config (context length, vocabulary) and its EOS ids.

`generate` runs DASD / sd / base through the draft-and-verify round logic on it
(`dasd.decoding.vllm_backend`); `eval` answers greedy or sampled prompts with it, a LoRA
adapter applied per request (`enable_lora`, `max_lora_rank` from the adapter's own
`adapter_config.json`). Both take token-id prompts built by the project's one prompt
builder and decode the answers with the project's tokenizer, so rows are written exactly
as with transformers.

vLLM pins its own torch and transformers: install it in an environment of its own
(`pip install 'dasd[vllm]'` in a fresh virtual environment); it is imported only here,
when a model is loaded. One `LLM` is kept per process and reused by later stages that
can use it (same model, dtype and memory settings; LoRA and log-probability widths at
least those asked for); a stage that needs another one frees it first, since two engines
would each claim `gpu_memory_utilization` of the GPU.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dasd.decoding.engine import TokenTrace
from dasd.decoding.rules import SelectionRule
from dasd.decoding.vllm_backend import decode_pairs_vllm, import_vllm, load_vllm, logprob_widths
from dasd.errors import DasdError

# The ranks vLLM's LoRA kernels are built for (`LoRAConfig.max_lora_rank`).
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass
class VLLMSettings:
    """What a user must choose for vLLM: its share of the GPU, and how long sequences get."""

    gpu_memory_utilization: float = field(default=0.5, metadata={
        "help": "share of the GPU's memory vLLM claims for weights and KV cache; 0.5 leaves "
                "room for the transformers copy `dasd run` keeps for training (0.85-0.9 for "
                "a standalone generate/eval)"})
    max_model_len: int | None = field(default=None, metadata={
        "help": "longest prompt + response vLLM reserves KV cache for (default: the model's "
                "context; lower it when the KV cache does not fit)"})
    tensor_parallel_size: int = field(default=1, metadata={
        "help": "GPUs one model is split over (vLLM runs in one process: no torchrun)"})
    engine_kwargs: dict = field(default_factory=dict, metadata={
        "help": "further `vllm.LLM` arguments, e.g. '{enforce_eager: true, swap_space: 8}'"})
    path: Literal["draft-verify", "lockstep"] = field(default="draft-verify", metadata={
        "help": "how generate decodes on vLLM: draft-verify (reference drafts, base scoring by "
                "prompt log-probabilities; dasd/sd/base) or lockstep (both contexts as two "
                "requests a logits processor keeps in step: every rule; vLLM 0.11-0.33; not "
                "yet run on a GPU)", "omit_default": True})

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise DasdError(f"vllm.gpu_memory_utilization must be in (0, 1]; got "
                            f"{self.gpu_memory_utilization}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise DasdError(f"vllm.max_model_len must be >= 1; got {self.max_model_len}")
        if self.tensor_parallel_size < 1:
            raise DasdError(f"vllm.tensor_parallel_size must be >= 1; got "
                            f"{self.tensor_parallel_size}")

    def llm_kwargs(self) -> dict[str, Any]:
        """`vllm.LLM` arguments (`path` picks the processor, not an argument)."""
        return {"gpu_memory_utilization": self.gpu_memory_utilization,
                "tensor_parallel_size": self.tensor_parallel_size,
                **({"max_model_len": self.max_model_len} if self.max_model_len else {}),
                **self.engine_kwargs}


def adapter_rank(adapter: str | Path) -> int:
    """The LoRA rank `r` an adapter was trained with (its `adapter_config.json`)."""
    path = Path(adapter) / "adapter_config.json"
    try:
        rank = json.loads(path.read_text(encoding="utf-8"))["r"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DasdError(f"{path} names no LoRA rank `r`: give an adapter saved by "
                        "`dasd train`") from None
    if not isinstance(rank, int) or rank < 1:
        raise DasdError(f"{path}: LoRA rank r must be a positive integer; got {rank!r}")
    return rank


def max_lora_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of rank `rank`."""
    fitting = [r for r in LORA_RANKS if r >= rank]
    if not fitting:
        raise DasdError(f"LoRA rank {rank} is over vLLM's largest, {LORA_RANKS[-1]}: "
                        "evaluate with the transformers backend")
    return fitting[0]


@dataclass
class VLLMModel:
    """What the stages need of a model served by vLLM. `config` is the Hugging Face model
    config (context length, vocabulary size), `generation_config` gives the EOS ids;
    `sampling_params` and `lora_request` default to vLLM's classes (tests pass stand-ins)."""

    llm: Any
    config: Any
    generation_config: Any = None
    adapter: Any = None  # the LoRA request of an applied adapter
    sampling_params: Callable[..., Any] | None = None
    lora_request: Callable[..., Any] | None = None
    lockstep: bool = False  # built with the lockstep logits processor

    @property
    def vocab_size(self) -> int:
        text = self.config.get_text_config() if hasattr(self.config, "get_text_config") \
            else self.config
        return text.vocab_size

    def params(self, **kwargs: Any) -> Any:
        return (self.sampling_params or import_vllm().SamplingParams)(**kwargs)

    def with_adapter(self, path: str | Path) -> VLLMModel:
        """This model answering through a LoRA adapter (applied per request, not merged)."""
        make = self.lora_request
        if make is None:
            from vllm.lora.request import LoRARequest as make
        request = make(lora_name=Path(path).name or "adapter", lora_int_id=1,
                       lora_path=str(path))
        return dataclasses.replace(self, adapter=request)

    def answer(self, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int,
               eos_ids: Sequence[int], *, do_sample: bool = False, temperature: float = 1.0,
               top_p: float = 1.0, top_k: int = 0, num_return_sequences: int = 1,
               seed: int | None = None) -> list[tuple[list[int], str]]:
        """`plain.generate_batch` on vLLM: `(token_ids, finish_reason)` per answer,
        prompt-major. Prompt i of a sampled batch is seeded `seed + i`, so its answers do
        not depend on the batch it is in. Every setting is explicit (no repetition
        penalty, top-k off unless asked), as on the transformers path."""
        sampled = {"temperature": temperature, "top_p": top_p,
                   "top_k": top_k if top_k > 0 else -1} if do_sample else {"temperature": 0.0}
        params = [self.params(n=num_return_sequences, max_tokens=max_new_tokens,
                              stop_token_ids=list(eos_ids), repetition_penalty=1.0,
                              detokenize=False,
                              seed=None if seed is None or not do_sample else seed + i,
                              **sampled)
                  for i in range(len(prompts_ids))]
        outputs = self.llm.generate([{"prompt_token_ids": list(ids)} for ids in prompts_ids],
                                    params, use_tqdm=False, lora_request=self.adapter)
        return [answer_ids(completion, eos_ids) for output in outputs
                for completion in sorted(output.outputs, key=lambda c: c.index)]


def answer_ids(completion: Any, eos_ids: Sequence[int]) -> tuple[list[int], str]:
    """(token ids up to and including the first EOS, "eos" | "length") of one vLLM
    completion, as the transformers path gives them. vLLM returns the stop token in
    `token_ids`; should it not, the token that stopped it (`stop_reason`) is appended."""
    ids, eos = list(completion.token_ids), set(eos_ids)
    for i, token in enumerate(ids):
        if token in eos:
            return ids[: i + 1], "eos"
    if completion.finish_reason == "stop":
        stop = completion.stop_reason
        return ids + [stop if isinstance(stop, int) else list(eos_ids)[0]], "eos"
    return ids, "length"


def decode_pairs_on_vllm(model: VLLMModel, ref_prompts: Sequence[Sequence[int]],
                         base_prompts: Sequence[Sequence[int]], rule: SelectionRule,
                         eos_ids: Sequence[int], max_new_tokens: int, pad_id: int,
                         on_step: Callable[[int], None] | None = None, *,
                         keys: Sequence[object] | None = None,
                         decode: Callable[[list[int]], str] | None = None,
                         chunk_size: int | None = None) -> list[TokenTrace]:
    """`decode_pairs` (same call, same traces) with the contexts served by vLLM: in lockstep
    when the model was built for it (`keys` and `decode` then serve stateful rules; a pair
    that cannot be kept in step falls back to draft-and-verify), else by draft-and-verify
    (stateful rules refused). `pad_id` is unused: vLLM takes unpadded prompts."""
    if not ref_prompts:
        return []

    def draft_verify(refs: Sequence[Sequence[int]], bases: Sequence[Sequence[int]],
                     step: Callable[[int], None] | None = on_step) -> list[TokenTrace]:
        return decode_pairs_vllm(model.llm, refs, bases, rule, eos_ids, max_new_tokens,
                                 model.vocab_size, step, chunk_size, model.sampling_params,
                                 forced=model.lockstep)  # linear where the processor is

    if not model.lockstep:
        return draft_verify(ref_prompts, base_prompts)
    from dasd.decoding.vllm_lockstep import decode_pairs_lockstep
    from dasd.decoding.vllm_lockstep_engine import VLLMLockstepEngine, pairs_per_call

    engine = VLLMLockstepEngine(model.llm, eos_ids, model.params)
    fallback = None if hasattr(rule, "start") else lambda pairs: draft_verify(
        [ref_prompts[p] for p in pairs], [base_prompts[p] for p in pairs], None)
    traces, _ = decode_pairs_lockstep(engine, ref_prompts, base_prompts, rule, eos_ids,
                                      max_new_tokens, keys=keys, decode=decode,
                                      fallback=fallback, pairs_per_call=pairs_per_call(
                                          model.llm, ref_prompts, base_prompts, max_new_tokens))
    if on_step:
        on_step(sum(len(t.token_ids) for t in traces))
    return traces


_LOADED: list[tuple[dict[str, Any], Any]] = []  # at most one (what it was loaded with, LLM)


def _llm(path: str, dtype: str, settings: VLLMSettings, lora_rank: int, logprobs: int):
    """The process's `LLM` if it fits these settings, else a new one (the old one freed)."""
    base = {"model": path, "dtype": dtype, "path": settings.path, **settings.llm_kwargs()}
    if _LOADED:
        have, llm = _LOADED[0]
        if have["base"] == base and have["lora"] >= lora_rank and have["logprobs"] >= logprobs:
            return llm
        _LOADED.clear()
        del llm
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    lora = {"enable_lora": True, "max_lora_rank": lora_rank} if lora_rank else {}
    load = load_vllm
    if settings.path == "lockstep":
        from dasd.decoding.vllm_processor import load_lockstep_llm as load
    llm = load(path, max_logprobs=logprobs, dtype=dtype, **settings.llm_kwargs(), **lora)
    _LOADED.append(({"base": base, "lora": lora_rank, "logprobs": logprobs}, llm))
    return llm


def load_vllm_model(spec: str, dtype: str, settings: VLLMSettings, *,
                    lora_for: str | Path | None = None,
                    rule: SelectionRule | None = None) -> tuple[VLLMModel, Any]:
    """(VLLMModel, tokenizer) of a model spec (hub id, local directory, .gguf file or the
    embedded model, resolved as for transformers), with LoRA enabled at the rank of the
    adapter `lora_for` (applied by `with_adapter`) and log-probabilities as wide as `rule`
    needs. dtype "auto" is bf16 where the GPU has it, else fp16 (as for transformers).
    Fails with one line when vLLM is missing."""
    from transformers import AutoConfig, GenerationConfig

    from dasd.distributed import ShardPlan
    from dasd.models import load_tokenizer, pick_device, pick_dtype, resolve_model

    if ShardPlan.from_env().world_size > 1:
        raise DasdError("vLLM runs in one process: launch without torchrun / accelerate, and "
                        "split a large model with --vllm.tensor-parallel-size")
    import_vllm()  # the one-line install hint, before anything is loaded
    path = resolve_model(spec)
    widths = logprob_widths(rule) if rule is not None else (0, 0)
    rank = max_lora_rank(adapter_rank(lora_for)) if lora_for is not None else 0
    if dtype == "auto":
        dtype = str(pick_dtype(dtype, pick_device("auto"))).removeprefix("torch.")
    llm = _llm(path, dtype, settings, rank, max(20, *widths))
    config = AutoConfig.from_pretrained(path)
    if settings.max_model_len:  # the context prompts are measured against
        config = copy.deepcopy(config)
        config.max_position_embeddings = min(settings.max_model_len, getattr(
            config, "max_position_embeddings", None) or settings.max_model_len)
    try:
        generation_config = GenerationConfig.from_pretrained(path)
    except OSError:
        generation_config = None
    return (VLLMModel(llm, config, generation_config, lockstep=settings.path == "lockstep"),
            load_tokenizer(spec))


def served_model(config: Any, model: Any = None, tokenizer: Any = None, *,
                 rule: SelectionRule | None = None,
                 lora_for: str | Path | None = None) -> tuple[VLLMModel, Any]:
    """The vLLM model of a stage config (`model`, `dtype`, `vllm`): `model` itself when it
    is one (tests, a caller that holds it), else loaded; a transformers model passed in
    (`dasd run` holds one for training) is left alone."""
    if isinstance(model, VLLMModel):
        return model, tokenizer
    return load_vllm_model(config.model, config.dtype, config.vllm, rule=rule,
                           lora_for=lora_for)
