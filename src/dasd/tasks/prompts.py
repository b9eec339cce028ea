"""The one place prompts are built: templates, their YAML form, and chat rendering.

A template has two user messages: `base` sees the question only, `reference` also sees
the golden solution and is asked to solve in its own words. Placeholders `{question}` and
`{reference}` are replaced literally; every other brace is kept as written, so a
template may say `\\boxed{}` without escaping.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dasd.errors import DasdError
from dasd.records import read_text
from dasd.tasks.base import Example, PromptTemplate
from dasd.tasks.thinking import THINK_OPEN, thinking_prefix

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{(question|reference)\}")
_KEYS = ("base", "reference", "system")

_OWN_WORDS = ("Refer to the reference solution and write your own step-by-step solution "
              "in your own words, without mentioning the reference.")


def _template(ending: str) -> PromptTemplate:
    """Default base/reference pair that both end by asking for the answer as `ending`."""
    return PromptTemplate(
        # No "solve step by step": it makes small models ramble past the length limit.
        base=f"{{question}}\n\n{ending}",
        reference=("{question}\n\nReference solution:\n---\n{reference}\n---\n\n"
                   f"{_OWN_WORDS} {ending}"),
    )


# Numeric tasks (arith, GSM8K): "The answer is N." is what `extract_answer` looks for first.
NUMERIC_PROMPTS = _template('End with "The answer is N.", where N is the final number.')
# MATH: answers are LaTeX, so they are boxed as in the MATH solutions themselves.
BOXED_PROMPTS = _template("Put your final answer within \\boxed{}.")
# Multiple choice (ARC): the options are part of `{question}` (see `render_choices`).
CHOICE_PROMPTS = _template('End with "The answer is (X).", where X is the label of the '
                           "correct option.")


def render_choices(stem: str, labels: list[str], texts: list[str]) -> str:
    """A multiple-choice question as the model sees it: the stem, then "(A) text" per line.

    The options go into the question itself, so both contexts and any user template
    with `{question}` show them; the label comes first, as the answer names it.
    """
    options = (f"({label}) {text}" for label, text in zip(labels, texts, strict=True))
    return stem.strip() + "\n\n" + "\n".join(options)


def check_template(template: PromptTemplate, source: str) -> PromptTemplate:
    """Return `template` if its placeholders are usable, else raise naming `source`.

    The base prompt must not see `{reference}`: that would leak the solution into the
    context that is supposed to lack it.
    """
    rules = (("base", template.base, ("question",), ("reference",)),
             ("reference", template.reference, ("question", "reference"), ()))
    for key, text, needed, forbidden in rules:
        found = set(_PLACEHOLDER.findall(text))
        for name in needed:
            if name not in found:
                raise DasdError(f"{source}: '{key}' prompt lacks the {{{name}}} placeholder")
        for name in forbidden:
            if name in found:
                raise DasdError(f"{source}: '{key}' prompt must not contain {{{name}}}")
    return template


def load_prompt_template(path: str | Path) -> PromptTemplate:
    """Read a template from YAML with keys `base`, `reference` and optional `system`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DasdError(f"prompt file not found: {path}")
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        raise DasdError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DasdError(f"{path}: expected a mapping with keys base, reference, system")
    _check_keys(data, path)
    return check_template(PromptTemplate(data["base"], data["reference"], data.get("system")),
                          str(path))


def _check_keys(data: dict[str, Any], path: Path) -> None:
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise DasdError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_KEYS)}")
    for key in ("base", "reference"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise DasdError(f"{path}: missing or empty '{key}' prompt")
    if data.get("system") is not None and not isinstance(data["system"], str):
        raise DasdError(f"{path}: 'system' must be a string")


def fill(text: str, example: Example) -> str:
    """`text` with `{question}` and `{reference}` replaced by the example's fields."""
    values = {"question": example.question, "reference": example.reference}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


THINKING_BLOCKS = ("shared", "own", "open")


@dataclass(frozen=True)
class ChatSettings:
    """The chat-template arguments of each context and how their thinking blocks align.

    `base` and `reference` are `chat_template_kwargs` with each context's own arguments
    over them (the base context is the student's, and the one evaluation prompts with).
    `thinking_block` says what the reference prompt ends with when a template leaves a
    thinking block after the assistant header: `shared`, the base prompt's (both contexts
    then predict the first response token at the same point); `own`, its own rendering;
    `open`, an open `<think>` (the reference context reads the response as its thinking).
    """

    base: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    thinking_block: str = "shared"

    @classmethod
    def of(cls, config: Any) -> ChatSettings:
        """The settings of a stage config (`chat_template_kwargs`, `base_chat_template_kwargs`,
        `reference_chat_template_kwargs`, `thinking_block`), or a mapping of them (a
        resolved config as written); None: the defaults."""
        def get(key: str) -> Any:
            return (config.get(key) if isinstance(config, dict)
                    else getattr(config, key, None)) or None

        shared = get("chat_template_kwargs") or {}
        return cls({**shared, **(get("base_chat_template_kwargs") or {})},
                   {**shared, **(get("reference_chat_template_kwargs") or {})},
                   get("thinking_block") or "shared")


def render_prompts(tokenizer: Any, template: PromptTemplate, example: Example,
                   config: Any = None) -> tuple[str, str]:
    """(base_text, reference_text): both prompts ready to tokenize, ending where the answer starts.

    With a chat template, each is `apply_chat_template` over [system?, user] with the
    generation prompt added and its context's arguments (`ChatSettings.of(config)`);
    `template.system` None keeps the template's own default. The reference prompt's
    thinking block is then aligned as `thinking_block` says. Without a chat template (a
    base model), the fallback is plain text:
    "<system>\\n\\n" (if any) + "Question: <user message>\\n\\nAnswer:".
    """
    chat = ChatSettings.of(config)
    base = _render(tokenizer, template.system, fill(template.base, example), chat.base)
    reference = _render(tokenizer, template.system, fill(template.reference, example),
                        chat.reference)
    if chat.thinking_block == "open" and not has_token(tokenizer, THINK_OPEN):
        raise DasdError("thinking_block open needs a tokenizer with a <think> token; this "
                        "model has none: use shared or own")
    return base, align_thinking(reference, base, chat.thinking_block)


def has_token(tokenizer: Any, token: str) -> bool:
    """Whether `token` is one token of `tokenizer`'s vocabulary."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def align_thinking(reference: str, base: str, thinking_block: str) -> str:
    """`reference` ending with the thinking block `thinking_block` asks for (see
    `ChatSettings`)."""
    if thinking_block == "own":
        return reference
    head = reference[:len(reference) - len(thinking_prefix(reference))]
    return head + (thinking_prefix(base) if thinking_block == "shared" else THINK_OPEN + "\n")


def _render(tokenizer: Any, system: str | None, user: str,
            chat_template_kwargs: dict[str, Any] | None) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        prefix = f"{system}\n\n" if system else ""
        return f"{prefix}Question: {user}\n\nAnswer:"
    return tokenizer.apply_chat_template(messages(system, user), tokenize=False,
                                         add_generation_prompt=True,
                                         **(chat_template_kwargs or {}))


def messages(system: str | None, user: str) -> list[dict[str, str]]:
    """The chat messages of one context: the system message (None: the chat template's
    own default) and the user message. `dasd export` hands them to TRL as they are."""
    return ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user}]


def encode(tokenizer, text: str) -> list[int]:
    """Chat-formatted prompts already hold their special tokens; plain ones need BOS."""
    return tokenizer(text, add_special_tokens=tokenizer.chat_template is None)["input_ids"]


def fit_context(examples: list[Example], lengths: list[int], limit: int | None,
                skip: bool, what: str) -> tuple[list[Example], list[str]]:
    """(examples to decode, ids skipped): a prompt of more than `limit` tokens (the
    model's context minus the new-token budget) is refused with one line before anything
    is decoded or written, or, with `skip`, left out and named."""
    if limit is None:
        return examples, []
    long = [(e, n) for e, n in zip(examples, lengths, strict=True) if n > limit]
    if not long:
        return examples, []
    if not skip:
        example, n = long[0]
        more = f" (and {len(long) - 1} more)" if len(long) > 1 else ""
        raise DasdError(f"the {what} of {example.id} has {n} tokens, over the {limit} the "
                        f"model's context leaves beside the new tokens{more}: raise the "
                        "context or lower the token budget, or pass --skip-long-prompts")
    skipped = {e.id for e, _ in long}
    log.warning("left out %d problems whose %s does not fit the context: %s",
                len(skipped), what, ", ".join(sorted(skipped)))
    return [e for e in examples if e.id not in skipped], sorted(skipped)
