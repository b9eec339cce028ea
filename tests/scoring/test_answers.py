"""Answer extraction and checking (dasd.scoring.answers)."""

from __future__ import annotations

import threading
from fractions import Fraction

import pytest

from dasd.scoring.answers import (
    check_math,
    check_numeric,
    extract_answer,
    format_number,
    last_boxed,
    math_equal,
    numbers_equal,
    to_number,
)


@pytest.mark.parametrize(("text", "answer", "how"), [
    ("So he has 17 apples. The answer is 17.", "17", "final-answer"),
    ("The final answer is 42", "42", "final-answer"),
    ("Final answer: 9", "9", "final-answer"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5", "final-answer"),
    ("Work...\nAnswer: 12", "12", "final-answer"),
    ("**Answer:** 18", "18", "final-answer"),
    ("The answer is: **7 apples**.", "7 apples", "final-answer"),
    ("So the final answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", "final-answer"),
    ("The answer is\n\n\\boxed{4}", "4", "final-answer"),
    ("Natalia sold 72 clips.\n#### 72", "72", "hashes"),
    ("#### 1,080", "1080", "hashes"),
    ("So $x = \\boxed{3}$.", "3", "boxed"),
    ("\\boxed{\\frac{a}{b^{2}}} and more text", "\\frac{a}{b^{2}}", "boxed"),
    ("the result is \\boxed 9.", "9", "boxed"),
    ("\\fbox{12}", "12", "boxed"),
    ("3 + 4 = 7, and 7 + 2 = 9 in total.", "9", "last-number"),
    ("It costs $1,234 in all", "1234", "last-number"),
    ("no digits at all", None, "none"),
    ("", None, "none"),
])
def test_extract_patterns(text: str, answer: str | None, how: str) -> None:
    assert extract_answer(text) == (answer, how)


def test_extract_prefers_final_answer_then_hashes_then_boxed_then_number() -> None:
    everything = "\\boxed{3} then 99\n#### 4\nThe answer is 5."
    assert extract_answer(everything) == ("5", "final-answer")
    assert extract_answer("\\boxed{3} then 99\n#### 4") == ("4", "hashes")
    assert extract_answer("\\boxed{3} then 99") == ("3", "boxed")


def test_extract_takes_the_last_occurrence() -> None:
    assert extract_answer("The answer is 3. Wait, no. The answer is 5.") == ("5", "final-answer")
    assert extract_answer("\\boxed{1} ... \\boxed{2}") == ("2", "boxed")
    assert extract_answer("#### 1\n#### 2") == ("2", "hashes")


def test_a_later_box_beats_an_earlier_statement() -> None:
    text = "Thus the answer is \\begin{align*}\nx &= 2+3 \\\\\n&= \\boxed{5}\n\\end{align*}"
    assert extract_answer(text) == ("5", "boxed")


def test_a_verbal_statement_loses_to_a_box() -> None:
    """MATH solutions add remarks like this after their boxed answer."""
    text = "So we get $\\boxed{\\frac{9}{35}}$. The answer is in simplest form."
    assert extract_answer(text) == ("\\frac{9}{35}", "boxed")
    assert extract_answer("The answer is yes.") == ("yes", "final-answer")


def test_lowercase_answer_colon_mid_sentence_is_not_a_statement() -> None:
    assert extract_answer("Let's find the answer: 3 + 4 = 7") == ("7", "last-number")


@pytest.mark.parametrize(("text", "answer"), [
    ("The answer is $18.", "18"),
    ("The answer is $18.00.", "18.00"),
    ("The answer is 1,234,567.", "1234567"),
    ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("The answer is \\(2x+1\\).", "2x+1"),
    ("The answer is 3.5.", "3.5"),
    ("The answer is 24? Yes.", "24"),
])
def test_extract_strips_wrapping(text: str, answer: str) -> None:
    assert extract_answer(text)[0] == answer


def test_last_boxed_nested_and_unclosed() -> None:
    assert last_boxed("\\boxed{\\{1, 2\\}} and \\boxed{\\sqrt{\\frac{1}{2}}}") == \
        "\\sqrt{\\frac{1}{2}}"
    assert last_boxed("\\boxed{1} then \\boxed{2") == "1"
    assert last_boxed("no box") is None


@pytest.mark.parametrize(("a", "b"), [
    ("18", "18.00"), ("$18", "18"), ("1,234", "1234"), ("50%", "50"), ("0.5", "1/2"),
    ("-3", "-3.0"), ("\\frac{3}{4}", "0.75"), ("-\\dfrac{2}{5}", "-0.4"), ("7.", "7"),
    ("\u22125", "-5"),
])
def test_numbers_equal(a: str, b: str) -> None:
    assert numbers_equal(a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("18", "17"), ("0.33", "1/3"), ("abc", "abc"), ("", "0"), ("1/0", "1/0"), ("12 apples", "12"),
])
def test_numbers_not_equal(a: str, b: str) -> None:
    assert not numbers_equal(a, b)


def test_to_number_and_format() -> None:
    assert to_number("1,080") == 1080
    assert to_number("x+1") is None
    assert format_number(Fraction(18)) == "18"
    assert format_number(Fraction(1, 4)) == "0.25"
    assert format_number(Fraction(-1, 3)) == "-1/3"


@pytest.mark.parametrize(("response", "gold", "extracted", "correct"), [
    ("He has 18.00 dollars. The answer is $18.00.", "18", "18", True),
    ("The answer is 17 apples.", "17", "17", True),
    ("The answer is 12 + 5 = 17.", "17", "17", True),
    ("The answer is the sum of 3 and 4, which is 7.", "7", "7", True),
    ("The answer is 16.", "17", "16", False),
    ("#### 1,080", "1080", "1080", True),
    ("I am not sure.", "3", None, False),
])
def test_check_numeric(response: str, gold: str, extracted: str | None, correct: bool) -> None:
    check = check_numeric(response, gold)
    assert (check.extracted, check.correct) == (extracted, correct)


@pytest.mark.parametrize(("pred", "gold"), [
    ("0.5", "\\frac{1}{2}"),
    ("\\dfrac{1}{2}", "\\frac12"),
    ("\\tfrac{3}{4}", "0.75"),
    ("3\\sqrt{2}", "\\sqrt{18}"),
    ("(1, 2)", "(1,2)"),
    ("x^2 + 1", "1+x^2"),
    ("90^\\circ", "90"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("\\text{(C)}", "(C)"),
    ("300000", "300,\\!000"),
])
def test_math_equal_equivalents(pred: str, gold: str) -> None:
    assert math_equal(pred, gold)


@pytest.mark.parametrize(("pred", "gold"), [
    ("0.5", "\\frac{1}{3}"), ("}{{garbage\\frac", "2"), ("\\frac{", "\\frac{1}{2}"), ("", "1"),
    (None, "1"), ("x+1", "x-1"), ("\\sqrt{-", "\\sqrt{2}"),
])
def test_math_equal_rejects(pred: str | None, gold: str) -> None:
    assert not math_equal(pred, gold)


def test_math_equal_outside_the_main_thread() -> None:
    """math-verify's SIGALRM timeout would raise in a thread; the check must still work."""
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(math_equal("0.5", "\\frac{1}{2}")))
    worker.start()
    worker.join()
    assert results == [True]


def test_check_math() -> None:
    check = check_math("So $x = \\boxed{\\dfrac{1}{2}}$.", "0.5")
    assert (check.extracted, check.how, check.correct) == ("\\dfrac{1}{2}", "boxed", True)
    assert not check_math("nothing here", "1").correct
