"""The in-place KV cache against transformers' concatenating one."""

import pytest
import torch
from transformers import DynamicCache, Gemma2Config, Gemma2ForCausalLM
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from dasd.decoding.cache import GrowingLayer, generation_cache, growing_cache
from dasd.decoding.engine import decode_pairs
from dasd.decoding.plain import generate_batch
from dasd.decoding.rules import build_rule
from tests.conftest import make_model


def states(g: torch.Generator, batch: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(batch, 2, columns, 4, generator=g),
            torch.randn(batch, 2, columns, 4, generator=g))


def assert_same(a: DynamicLayer, b: DynamicLayer) -> None:
    assert a.get_seq_length() == b.get_seq_length()
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_growing_layer_follows_dynamic_layer_through_appends_crops_and_selects():
    g = torch.Generator().manual_seed(0)
    grown, plain = GrowingLayer(room=3), DynamicLayer()
    for columns in (5, 1, 1, 4):  # the prompt gets 3 spare columns; the last update grows
        k, v = states(g, 4, columns)
        out_grown, out_plain = grown.update(k, v), plain.update(k, v)
        assert all(torch.equal(x, y) for x, y in zip(out_grown, out_plain, strict=True))
    assert_same(grown, plain)
    grown.crop(-3), plain.crop(-3)
    assert_same(grown, plain)
    rows = torch.tensor([3, 1])
    grown.batch_select_indices(rows), plain.batch_select_indices(rows)
    assert_same(grown, plain)
    k, v = states(g, 2, 2)  # appending after a crop overwrites the dropped columns
    grown.update(k, v), plain.update(k, v)
    assert_same(grown, plain)
    grown.batch_repeat_interleave(2), plain.batch_repeat_interleave(2)
    assert_same(grown, plain)
    grown.crop(0), grown.crop(-100)
    assert grown.get_seq_length() == 0


def test_spare_room_stays_small_as_the_cache_grows():
    g = torch.Generator().manual_seed(5)
    layer = GrowingLayer(room=4)
    layer.update(*states(g, 1, 10))
    assert layer._key_buffer.shape[-2] == 14  # the prompt and `room` more, nothing reserved
    for _ in range(200):
        layer.update(*states(g, 1, 1))
        spare = layer._key_buffer.shape[-2] - layer.filled
        assert 0 <= spare <= max(4, layer.filled // 4)
    assert layer.get_seq_length() == 210


def test_growing_layer_refuses_a_positive_crop():
    layer = GrowingLayer()
    layer.update(*states(torch.Generator().manual_seed(1), 1, 2))
    with pytest.raises(ValueError, match="negative"):
        layer.crop(1)


def test_model_logits_are_the_same_with_either_cache():
    model = make_model(64, seed=2)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 64, (2, 9), generator=g)
    ours, theirs = growing_cache(model, room=1), DynamicCache(config=model.config)
    with torch.no_grad():
        for chunk in (ids[:, :5], ids[:, 5:6], ids[:, 6:9]):
            a = model(input_ids=chunk, cache=ours, use_cache=True).logits
            b = model(input_ids=chunk, cache=theirs, use_cache=True).logits
            assert torch.equal(a, b)
    assert all(isinstance(layer, GrowingLayer) for layer in ours.layers)


def test_sliding_window_layers_keep_their_own_class():
    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=8, sliding_window=4, max_position_embeddings=64)
    cache = growing_cache(Gemma2ForCausalLM(config))
    kinds = {type(layer) for layer in cache.layers}
    assert kinds == {GrowingLayer, DynamicSlidingWindowLayer}


def test_step_engine_tokens_do_not_depend_on_the_room(monkeypatch):
    model = make_model(64, seed=4, eos_id=1, eos_bias=0.3)
    refs, bases = [[5, 6, 7, 8, 9], [10, 11]], [[12], [13, 14, 15]]
    rule = build_rule("dasd")
    roomy = decode_pairs(model, refs, bases, rule, [1], 30, pad_id=0)
    monkeypatch.setattr("dasd.decoding.engine.growing_cache",
                        lambda m, room, **kwargs: growing_cache(m, room=1, **kwargs))
    cramped = decode_pairs(model, refs, bases, rule, [1], 30, pad_id=0)
    assert [t.token_ids for t in roomy] == [t.token_ids for t in cramped]
    assert [t.p_base for t in roomy] == [t.p_base for t in cramped]


@pytest.mark.parametrize("sampled", [False, True])
def test_generate_gives_the_same_answers_with_the_in_place_cache(tokenizer, tiny_model, sampled):
    prompts = [tokenizer("12+7=")["input_ids"], tokenizer("a longer prompt: 3*4=")["input_ids"]]
    settings = {"do_sample": True, "temperature": 0.8, "num_return_sequences": 3, "seed": 5
                } if sampled else {}
    eos = [tokenizer.eos_token_id]
    ours = generate_batch(tiny_model, tokenizer, prompts, 40, eos, **settings)
    theirs = generate_batch(tiny_model, tokenizer, prompts, 40, eos, in_place_cache=False,
                            **settings)
    assert ours == theirs
    assert generation_cache(tiny_model) is not None


def test_row_operations_follow_a_plain_tensor():
    """The continuous-batching operations against the same edits on plain tensors."""
    g = torch.Generator().manual_seed(6)
    layer = GrowingLayer(room=2)
    k, v = states(g, 4, 3)
    layer.reserve(4, 3, k, v)
    keys, values = torch.zeros_like(k), torch.zeros_like(v)

    def check():
        assert layer.get_seq_length() == keys.shape[-2]
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)

    check()
    k, v = states(g, 2, 2)  # two rows get their last two columns
    layer.write_rows(torch.tensor([1, 3]), k, v)
    keys[[1, 3], :, 1:], values[[1, 3], :, 1:] = k, v
    check()
    for columns in (1, 2, 1):  # appends (one grows the buffer), then a trim on the left
        k, v = states(g, 4, columns)
        layer.update(k, v)
        keys, values = torch.cat([keys, k], -2), torch.cat([values, v], -2)
        check()
    layer.trim(3)
    keys, values = keys[..., 3:, :], values[..., 3:, :]
    check()
    for extra in (2, 9):  # into the trimmed room, then past it (a new buffer)
        layer.widen(extra)
        pad = torch.zeros(4, 2, extra, 4)
        keys, values = torch.cat([pad, keys], -2), torch.cat([pad, values], -2)
        check()
    layer.move_rows(torch.tensor([3, 2]), torch.tensor([0, 1]))
    keys[[0, 1]], values[[0, 1]] = keys[[3, 2]], values[[3, 2]]
    layer.keep_rows(2)
    keys, values = keys[:2], values[:2]
    check()
    layer.batch_select_indices(torch.tensor([1]))
    keys, values = keys[[1]], values[[1]]
    check()
    with pytest.raises(ValueError, match="widen the cache first"):
        layer.write_rows(torch.tensor([0]), *states(g, 1, keys.shape[-2] + 1))


def test_refill_compaction_and_trim_copy_no_buffer():
    g = torch.Generator().manual_seed(7)
    layer = GrowingLayer(room=8)
    layer.reserve(6, 4, *states(g, 6, 4))
    layer.update(*states(g, 6, 1))
    buffer = layer._key_buffer.data_ptr()
    layer.write_rows(torch.tensor([2, 3]), *states(g, 2, 5))
    layer.trim(2)
    layer.widen(1)
    layer.move_rows(torch.tensor([4, 5]), torch.tensor([0, 1]))
    layer.keep_rows(4)
    layer.update(*states(g, 4, 1))
    assert layer._key_buffer.data_ptr() == buffer
