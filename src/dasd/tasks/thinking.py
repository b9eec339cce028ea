"""Thinking blocks: what a chat template leaves at the end of a prompt, and where a
response's answer starts.

Thinking models write `<think>...</think>` before they answer. A chat template may end a
generation prompt with an empty block (Qwen3 with `enable_thinking: false`) or an open one
(templates that force thinking); the prompts module aligns the two contexts on it, and
every checker reads the answer after the block.
"""

from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# What a chat template may leave after the assistant header: an empty thinking block
# (Qwen3 with enable_thinking false) or an open one (templates that force thinking).
_THINKING_PREFIX = re.compile(r"<think>\s*(?:</think>\s*)?\Z")


def thinking_prefix(prompt: str) -> str:
    """The thinking block a chat template left at the end of a generation prompt: an empty
    block (`<think>\\n\\n</think>\\n\\n`), an open one (`<think>\\n`), or ""."""
    match = _THINKING_PREFIX.search(prompt)
    return match.group(0) if match else ""


def opens_thinking(prompt: str) -> bool:
    """Whether a response to `prompt` starts inside a thinking block."""
    block = thinking_prefix(prompt)
    return bool(block) and THINK_CLOSE not in block


def answer_part(response: str, open_block: bool = False) -> str:
    """The part of a response an answer is read from: after its last `</think>`; nothing
    when the prompt opened a thinking block the response never closed."""
    if THINK_CLOSE in response:
        return response.rsplit(THINK_CLOSE, 1)[1]
    return "" if open_block else response
