"""Final-answer extraction and checking, written once and used by every task.

A response is reduced to one answer string by the first pattern that matches, in
this order of preference (`how` in `AnswerCheck`):

1. "final-answer": the last "The (final) answer is X", "Final answer: X" or
   "Answer: X" (capitalised, or at the start of a line);
2. "hashes": the last "#### X" (GSM8K's own format);
3. "boxed": the content of the last `\\boxed{...}` (nested braces, or `\\boxed 9`);
4. "last-number": the last number anywhere in the text;
5. "none": nothing found.

`check_math_verify` is the other way to score MATH, the one other harnesses use
(lm-evaluation-harness's `minerva_math` `math_verify` metric): math-verify parses both the
gold answer and the whole response with its own extraction, and dasd's is not used. An
evaluation reports both, so a score can be set beside published numbers.

A final-answer statement is passed over when a `\\boxed{}` comes after it, or when
it states nothing answer-like ("the answer is in simplest form", "the answer is
positive, because ...") while a box exists: MATH solutions say such things after
their boxed answer. Numeric tasks compare numbers exactly (as fractions), so "18.00",
"$18" and "18" agree; LaTeX answers go through math-verify after a fast check.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

from dasd.scoring import AnswerCheck

# Seconds math-verify may spend on one parse or comparison (main thread only; see _verify).
MATH_VERIFY_TIMEOUT = 5

_FINAL_PHRASE = re.compile(
    r"\bthe\s+(?:final\s+|correct\s+)?answer\s+is\b"
    r"|\bfinal\s+answer\s*(?:is\b|\**\s*:)"
    r"|^[ \t>#*_-]*final\s+answer[ \t*_:]*$"
    r"|\b(?-i:Answer)\s*\**\s*:"
    r"|^[ \t>#*_-]*answer\s*\**\s*:",
    re.IGNORECASE | re.MULTILINE,
)
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_MATH_OPEN = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}


def extract_answer(text: str) -> tuple[str | None, str]:
    """Return `(answer, how)`: the final answer of `text` and the pattern that found it.

    Explicit answer statements win over `####`, which wins over `\\boxed{}`, so a model
    asked to end with "The answer is N." is read from that sentence first.
    """
    finders = (("final-answer", _final_answer), ("hashes", _hashes),
               ("boxed", _boxed), ("last-number", _last_number))
    for how, finder in finders:
        answer = finder(text)
        if answer:
            return answer, how
    return None, "none"


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (braces may nest) or `\\boxed 9`, else None."""
    for match in reversed(list(_BOXED.finditer(text))):
        rest = text[match.end():]
        stripped = rest.lstrip()
        if stripped.startswith("{"):
            inner = _braced(stripped)
            if inner is not None:
                return inner
        elif rest[:1].isspace():
            bare = re.match(r"[^\s$]+", stripped)
            if bare and bare.group(0).rstrip(".,;:!?"):
                return bare.group(0).rstrip(".,;:!?")
    return None


def _braced(text: str) -> str | None:
    """Content of the brace group opening `text`, or None when it never closes."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return text[1:i]
    return None


def _final_answer(text: str) -> str | None:
    """What the last final-answer phrase states, unless a box is the more final answer."""
    matches = list(_FINAL_PHRASE.finditer(text))
    if not matches:
        return None
    line, _, after = text[matches[-1].end():].lstrip(" \t:*_\n").partition("\n")
    if last_boxed(after) is not None:
        return None
    answer = _tidy(_unwrap(line))
    if re.search(r"[\d\\^=/]", answer):
        return answer
    return answer if len(answer.split()) <= 2 and last_boxed(text) is None else None


def _hashes(text: str) -> str | None:
    matches = _HASHES.findall(text)
    return _tidy(_unwrap(matches[-1])) if matches else None


def _boxed(text: str) -> str | None:
    inner = last_boxed(text)
    return _tidy(inner) if inner is not None else None


def _last_number(text: str) -> str | None:
    matches = _NUMBER.findall(text)
    return _tidy(matches[-1]) if matches else None


def _unwrap(statement: str) -> str:
    """The answer inside a statement: its box, its leading `$...$`, or its first sentence."""
    statement = statement.strip().strip("*_: ").strip()
    boxed = last_boxed(statement)
    if boxed is not None:
        return boxed
    return _unwrap_math(statement) or re.split(r"[.!?](?=\s|$)", statement, maxsplit=1)[0]


def _tidy(answer: str) -> str:
    """Drop dollar signs, bold markers, a final period and thousands commas ("1,234")."""
    answer = answer.replace("\\$", "").replace("$", "").strip().rstrip(".").strip("*_ ")
    if _THOUSANDS.fullmatch(answer):
        answer = answer.replace(",", "")
    return answer


def _unwrap_math(answer: str) -> str | None:
    """Inside of a leading `$...$`, `\\(...\\)` or `\\[...\\]` that ends the sentence, else None.

    "$17 and $5 left" is money, not math: the closer must be followed by punctuation.
    """
    for opener, closer in _MATH_OPEN.items():
        if answer.startswith(opener):
            end = answer.find(closer, len(opener))
            after = answer[end + len(closer):] if end >= 0 else "x"
            if end > len(opener) and re.match(r"[\s.,;:!)]*($|\s)", after):
                return answer[len(opener):end]
            return None
    return None


def to_number(text: str) -> Fraction | None:
    """`text` as an exact number, or None.

    Tolerates "$18", "50%", "1,234", "18.00", "3/4" and "\\frac{3}{4}"; anything else
    (units, words, expressions) is None, so callers decide how lenient to be.
    """
    s = text.strip().replace("\u2212", "-")
    for junk in ("\\$", "$", "\\%", "%", "\\!", "\\,", "{,}"):
        s = s.replace(junk, "")
    s = re.sub(r"^\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$", r"\1/\2", s.strip())
    s = re.sub(r"^-\\[dt]?frac\{(\d+)\}\{(\d+)\}$", r"-\1/\2", s)
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s).strip().rstrip(".").strip()
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)(/\d+)?", s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(a: str, b: str) -> bool:
    """Whether `a` and `b` are the same number: "1,234" = "1234.00", "$18" = "18", "1/2" = "0.5"."""
    x, y = to_number(a), to_number(b)
    return x is not None and y is not None and x == y


def format_number(value: Fraction) -> str:
    """Canonical spelling: "18", "0.25", "-1/3" (a decimal only where it is exact)."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return f"{value.numerator}/{value.denominator}"
    return format(value.numerator / value.denominator, ".15g") if abs(value) < 1e15 else str(value)


def answer_number(answer: str) -> Fraction | None:
    """The number an extracted answer states, reading "17 apples" or "12 + 5 = 17" as 17."""
    value = to_number(answer)
    if value is not None:
        return value
    tail = re.split(r"=|\bis\b", answer)[-1]
    for part in (tail, answer):
        match = _NUMBER.search(part)
        if match:
            return to_number(match.group(0))
    return None


def check_numeric(response: str, gold: str) -> AnswerCheck:
    """Check a numeric final answer (arith, GSM8K); `extracted` is the canonical number."""
    extracted, how = extract_answer(response)
    if extracted is None:
        return AnswerCheck(None, how, False)
    value, gold_value = answer_number(extracted), to_number(gold)
    if value is None:
        return AnswerCheck(extracted, how, False)
    return AnswerCheck(format_number(value), how, gold_value is not None and value == gold_value)


def check_exact(response: str, gold: str) -> AnswerCheck:
    """Check a short final answer (task custom's `exact`): as numbers when both the answer
    and `gold` read as one ("18.00" = "18"), else as text up to case and spacing."""
    extracted, how = extract_answer(response)
    if extracted is None:
        return AnswerCheck(None, how, False)
    value, gold_value = to_number(extracted), to_number(gold)
    if value is not None and gold_value is not None:
        return AnswerCheck(format_number(value), how, value == gold_value)
    return AnswerCheck(extracted, how, _plain(extracted) == _plain(gold))


def _plain(text: str) -> str:
    """`text` as `exact` compares it: tidied, spaces collapsed, case folded."""
    return " ".join(_tidy(text).split()).casefold()


def check_math(response: str, gold: str) -> AnswerCheck:
    """Check a LaTeX final answer (MATH) with `math_equal`."""
    extracted, how = extract_answer(response)
    return AnswerCheck(extracted, how, extracted is not None and math_equal(extracted, gold))


def check_math_verify(response: str, gold: str) -> AnswerCheck:
    """Score a MATH response with math-verify alone: `parse(\\boxed{gold})` against
    `parse(response)` (math-verify's default extraction: the last boxed or `$...$` LaTeX
    answer, else a plain expression), compared with `verify`. `how` is "math-verify", or
    "none" when math-verify finds no answer; never raises."""
    from math_verify import parse, verify  # slow import (sympy), only needed here

    limit = MATH_VERIFY_TIMEOUT if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=limit)
        pred_parsed = parse(response, parsing_timeout=limit)
        if not pred_parsed:
            return AnswerCheck(None, "none", False)
        correct = bool(gold_parsed) and bool(verify(gold_parsed, pred_parsed,
                                                    timeout_seconds=limit))
    except Exception:  # math-verify and sympy raise many kinds of errors on odd input
        return AnswerCheck(None, "none", False)
    return AnswerCheck(str(pred_parsed[-1]), "math-verify", correct)


def math_equal(pred: str | None, gold: str) -> bool:
    """Whether `pred` and `gold` are the same mathematical answer; never raises.

    Cheap checks first (normalised strings, plain numbers), then math-verify's
    symbolic comparison for everything else (`\\frac{1}{2}` vs `0.5`, `3\\sqrt2` vs `\\sqrt{18}`).
    """
    if pred is None or not pred.strip():
        return False
    if _normalise_latex(pred) == _normalise_latex(gold):
        return True
    x, y = to_number(pred), to_number(gold)
    if x is not None and y is not None:
        return x == y
    return _verify(pred, gold)


def _normalise_latex(text: str) -> str:
    """Spelling-only differences removed: spaces, `\\left`, `\\dfrac`, `^\\circ`, `\\text{}`."""
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                     ("^\\circ", ""), ("^{\\circ}", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""),
                     ("$", "")):
        s = s.replace(old, new)
    return re.sub(r"\s+", "", s).rstrip(".")


def _verify(pred: str, gold: str) -> bool:
    """math-verify comparison, gold first; False on any failure.

    math-verify times out with SIGALRM, which only works in the main thread; elsewhere
    (e.g. a data-loader or server thread) the timeout is disabled rather than crashing,
    so a pathological expression can then take long.
    """
    from math_verify import parse, verify  # slow import (sympy), only needed here

    limit = MATH_VERIFY_TIMEOUT if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=limit)
        pred_parsed = parse(f"\\boxed{{{pred}}}", parsing_timeout=limit)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=limit))
    except Exception:  # math-verify and sympy raise many kinds of errors on odd input
        return False
