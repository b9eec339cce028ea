"""benchmarks/vllm_paths.py: the replay of a row through draft-and-verify, by hand."""

from __future__ import annotations

from tests.benchmarks import load_script


def test_a_row_replayed_by_hand():
    """8 tokens, the 6th not the reference top-1; the adaptive chunk starts at 4 (q 0.9):
    round 1 drafts 4 and keeps them, round 2 drafts 4 and keeps 2 (the 6th is the rule's),
    round 3 drafts 2 and keeps them."""
    paths = load_script("vllm_paths")
    row = paths.Replay(ref_prompt=10, base_prompt=5, accepted=[True] * 5 + [False, True, True])
    paths.replay_draft_verify([row], vocab=100, top_k=6, top_n=5)
    before, now, linear = (row.costs[name] for name in paths.PATHS)
    assert before.rounds == now.rounds == linear.rounds == 3 and row.at == 8
    drafted = 4 + 4 + 2
    # before and now: the reference prompt once, the base prompt + tokens so far + draft
    # every round, one token per later round for the rule's token the draft lacked
    assert before.prefill == now.prefill == 10 + (5 + 4) + (5 + 4 + 4) + (5 + 6 + 2) + 2
    assert before.recomputed == now.recomputed == 5 + (5 + 4) + (5 + 6)
    assert before.decode == drafted and before.host_bytes == 2 * drafted * 100 * 4
    # compact: at most (K + n + 1) = 12 columns per drafted position of the batch
    assert now.host_bytes == 2 * 4 * 48 * 4 + 2 * 4 * 48 * 4 + 2 * 2 * 24 * 4
    assert linear.prefill == 10 + 5 + 2 and linear.decode == 2 * drafted
    assert linear.recomputed == 0 and linear.host_bytes == now.host_bytes
