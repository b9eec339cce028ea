"""Multiple-choice answer extraction: which option label a response chose.

The labels are the example's own (ARC uses A-E in most rows and 1-4 in some), so only
those count. A response is read by the first pattern that finds a label, in this order
(`how` in `AnswerCheck`):

1. "final-answer": the last answer statement that names a label or an option's text:
   "The (correct) answer is (B)", "Answer: B", "The best option is 2", "I choose C",
   "The answer is wet palms";
2. "boxed": the last `\\boxed{B}` (also `\\boxed{(B)}`, `\\boxed{\\text{B}}`);
3. "last-line": a last line that is only a label, e.g. "(B)", "**B**", "B. wet palms";
4. "option-text": the option whose text occurs last in the response (an option whose
   every mention lies inside a longer option's mention does not count);
5. "last-label": the last label standing alone anywhere, e.g. "... so B is right.";
6. "none": nothing found.

A label in parentheses or brackets, "(B)", "[b]", always counts (case-insensitively).
A bare one counts only when it cannot be a word of the sentence: it must be followed by
punctuation or the end, by its own option's text, or by a verb such as "is"
("B is correct"). So the article in "A plant needs water." is not a choice of A, and
the 4 in "4 seasons" is not a choice of 4.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dasd.scoring import AnswerCheck
from dasd.scoring.answers import last_boxed

_STATEMENT = re.compile(
    r"\b(?:answer|option|choice)\s+(?:is|would\s+be|will\s+be|should\s+be)\b"
    r"|\b(?:final\s+)?answer\s*\**\s*:"
    r"|\bI\s+(?:would\s+)?(?:choose|pick|select|go\s+with)\b",
    re.IGNORECASE,
)
# Leading decoration between a statement and its label: markup, quotes, "option", "\text{".
_DECORATION = re.compile(r"(?:[\s:*_$\"'`]+|\\(?:boxed|text|textbf|mathrm)\{"
                         r"|(?i:option|choice|letter)\b)+")
# What may follow a bare label for it to be a choice rather than a word.
_BARE_END = re.compile(r"[ \t]*(?:\n|$)|[.,;:!?](?!\w)|[)\]}*_\"'`$]"
                       r"|\s+(?:[-\u2013\u2014(]|(?:is|was|because|since|would|seems|matches|fits)\b)")


def extract_choice(text: str, labels: Sequence[str],
                   options: Sequence[str] = ()) -> tuple[str | None, str]:
    """Return `(label, how)`: the option label `text` chose and the pattern that found it.

    `labels` are the example's labels ("A".."D" or "1".."4"); `options` their texts,
    in the same order (optional: without them the option-text patterns find nothing).
    """
    texts = dict(zip(labels, options, strict=False))
    finders = (("final-answer", _statement), ("boxed", _boxed), ("last-line", _last_line),
               ("option-text", _option_text), ("last-label", _last_label))
    for how, finder in finders:
        label = finder(text, texts, list(labels))
        if label is not None:
            return label, how
    return None, "none"


def check_choice(response: str, gold: str, labels: Sequence[str],
                 options: Sequence[str] = ()) -> AnswerCheck:
    """Check a multiple-choice response against the golden label `gold`."""
    label, how = extract_choice(response, labels, options)
    return AnswerCheck(label, how, label is not None and label == gold)


def label_at(text: str, labels: Sequence[str], texts: dict[str, str]) -> tuple[str, int] | None:
    """`(label, end)` when `text` opens with a label that counts as a choice, else None.

    "(B)" and "[b]" always count; a bare "B" only where `_BARE_END` or B's own option
    text follows it.
    """
    bracket = re.match(r"[(\[]\s*([A-Za-z0-9])\s*[)\]]", text)
    if bracket:
        found = _match_label(bracket.group(1), labels)
        return (found, bracket.end()) if found else None
    for label in sorted(labels, key=len, reverse=True):
        if not text.startswith(label):
            continue
        rest = text[len(label):]
        if rest[:1].isalnum():
            continue
        if _BARE_END.match(rest) or _starts_with_option(rest.lstrip(), texts.get(label)):
            return label, len(label)
    return None


def _match_label(raw: str, labels: Sequence[str]) -> str | None:
    for label in labels:
        if raw.upper() == label.upper():
            return label
    return None


def _starts_with_option(text: str, option: str | None, flags: int = re.IGNORECASE) -> bool:
    """Whether `text` begins with `option` (ending at a word boundary)."""
    if not option or not option.strip():
        return False
    option = option.strip().rstrip(".")
    return bool(re.match(re.escape(option) + r"(?!\w)", text, flags))


def _undecorated(text: str) -> str:
    match = _DECORATION.match(text)
    return text[match.end():] if match else text


def _statement(text: str, texts: dict[str, str], labels: list[str]) -> str | None:
    """The label the last answer statement names: "(B)", an option's text, or a bare "B".

    A named option text wins over a bare label, so "The answer is C_{6}H_{12}O_{6}" is
    the option with that formula, not C.
    """
    for match in reversed(list(_STATEMENT.finditer(text))):
        head = _undecorated(text[match.end():].split("\n", 1)[0])
        at = label_at(head, labels, texts)
        if at and head.startswith(("(", "[")):
            return at[0]
        label = _option_at(head, labels, texts) or (at[0] if at else None)
        if label:
            return label
    return None


def _option_at(text: str, labels: list[str], texts: dict[str, str]) -> str | None:
    """The label of the longest option text that `text` opens with; same case preferred
    ("Ww only" is not "WW only")."""
    for case in (0, re.IGNORECASE):
        found = [label for label in labels if _starts_with_option(text, texts.get(label), case)]
        if found:
            return max(found, key=lambda label: len(texts[label]))
    return None


def _boxed(text: str, texts: dict[str, str], labels: list[str]) -> str | None:
    inner = last_boxed(text)
    if inner is None:
        return None
    inner = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", inner).strip()
    found = label_at(inner, labels, texts)
    return found[0] if found else None


def _last_line(text: str, texts: dict[str, str], labels: list[str]) -> str | None:
    lines = [line for line in text.strip().split("\n") if line.strip()]
    if not lines:
        return None
    line = _undecorated(lines[-1].strip().lstrip("#>-").strip())
    found = label_at(line, labels, texts)
    if found is None:
        return None
    label, end = found
    rest = line[end:].strip(" \t.:)*_\"'`")
    return label if not rest or _starts_with_option(rest, texts.get(label)) else None


def _option_text(text: str, texts: dict[str, str], labels: list[str]) -> str | None:
    """The option mentioned last; mentions inside a longer option's mention are ignored.

    Same-case mentions are looked for first: genotype options ("WW or Ww", "Ww or ww")
    differ only in case.
    """
    for flags in (0, re.IGNORECASE):
        spans = [(match.start(), match.end(), label) for label in labels
                 if texts.get(label, "").strip()
                 for match in re.finditer(r"(?<!\w)" + re.escape(texts[label].strip().rstrip("."))
                                          + r"(?!\w)", text, flags)]
        kept = [span for span in spans
                if not any(o[0] <= span[0] and span[1] <= o[1] and o[1] - o[0] > span[1] - span[0]
                           for o in spans)]
        if kept:
            return max(kept, key=lambda span: (span[1], span[1] - span[0]))[2]
    return None


def _last_label(text: str, texts: dict[str, str], labels: list[str]) -> str | None:
    """The last label standing alone: not inside a word or number ("A" in "Apple", "1" in "10")."""
    for match in reversed(list(re.finditer(r"(?<![\w.,])(?=[(\[]|\w)", text))):
        found = label_at(text[match.start():], labels, texts)
        if found:
            return found[0]
    return None
