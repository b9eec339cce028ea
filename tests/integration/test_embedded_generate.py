"""DASD against plain self-distillation on the embedded SmolLM2-135M (CPU, ~2 minutes)."""

import pytest

from dasd.decoding.generate import GenerateConfig, generate
from dasd.models import load_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded():
    return load_model("smollm2-135m")


def test_dasd_lowers_high_ppl_tokens_against_sd(tmp_path, embedded):
    model, tokenizer = embedded
    summaries = {}
    for method in ("sd", "dasd"):
        config = GenerateConfig(method=method, task="arith", limit=6, max_new_tokens=96,
                                batch_size=6, out=str(tmp_path / f"{method}.jsonl"))
        summaries[method] = generate(config, model=model, tokenizer=tokenizer)
    for summary in summaries.values():
        assert summary["samples"] == 6
        assert sum(summary["categories_percent"].values()) == pytest.approx(100.0)
        assert 0 < summary["high_ppl_percent"] < 100
    dasd, sd = summaries["dasd"], summaries["sd"]
    assert dasd["high_ppl_percent"] < sd["high_ppl_percent"]
    # DASD departs from the reference top-1 only where the base model disagrees with it.
    assert dasd["categories_percent"]["consistent"] > 50
    assert dasd["categories_percent"]["base-selected"] == 0  # the default fallback is ref
