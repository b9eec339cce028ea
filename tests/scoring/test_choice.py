"""Multiple-choice answer extraction (dasd.scoring.choice), on hand-written responses."""

from __future__ import annotations

import pytest

from dasd.scoring import AnswerCheck
from dasd.scoring.choice import check_choice, extract_choice, label_at

LETTERS = ["A", "B", "C", "D"]
PALMS = ["dry palms", "wet palms", "palms covered with oil", "palms covered with lotion"]
DIGITS = ["1", "2", "3", "4"]
SEASONS = ["winter", "spring", "summer", "fall"]


@pytest.mark.parametrize(("text", "label", "how"), [
    # answer statements, the pattern the prompt asks for first
    ("Rubbing wet skin makes friction... The answer is (B).", "B", "final-answer"),
    ("The correct answer is (B) wet palms.", "B", "final-answer"),
    ("Answer: C", "C", "final-answer"),
    ("**Answer:** D", "D", "final-answer"),
    ("The answer is: **A**", "A", "final-answer"),
    ("The best option is B because friction is higher.", "B", "final-answer"),
    ("Final answer: (d)", "D", "final-answer"),
    ("I choose C.", "C", "final-answer"),
    ("The answer is option B.", "B", "final-answer"),
    ("So the answer is $\\boxed{B}$.", "B", "final-answer"),
    ("The answer is wet palms.", "B", "final-answer"),
    ("The answer is palms covered with oil.", "C", "final-answer"),
    # the last statement that names a choice wins; one naming none is passed over
    ("The answer is (A). Wait, no. The answer is (C).", "C", "final-answer"),
    ("The answer is (D).\nThe answer is not obvious, though.", "D", "final-answer"),
    # "A" as an article after a statement is not a choice; a later pattern decides
    ("The answer is A plant needs water.\nB", "B", "last-line"),
    # boxed
    ("Friction heats dry skin most, so \\boxed{A}", "A", "boxed"),
    ("\\boxed{(C)}", "C", "boxed"),
    ("\\boxed{\\text{D}}", "D", "boxed"),
    # a last line that is only a label (with markup or its option text)
    ("Let me compare the options.\n\n**B**", "B", "last-line"),
    ("Dry skin has more friction.\nA. dry palms", "A", "last-line"),
    ("Comparing them:\n(C)", "C", "last-line"),
    # fallback: the option text mentioned last
    ("Dry palms rub with the most friction.", "A", "option-text"),
    ("Not dry palms: wet palms.", "B", "option-text"),
    ("Palms covered with oil slide easily.", "C", "option-text"),
    # fallback: the last label standing alone
    ("Thinking about friction, B is correct.", "B", "last-label"),
    ("Among (A) and (C), I lean to (C) here", "C", "last-label"),
    # nothing
    ("A plant needs water and sunlight to grow.", None, "none"),
    ("A. B. C. D. are all letters\nin the alphabet", "D", "last-label"),
    ("", None, "none"),
    ("The answer is E.", None, "none"),
])
def test_extract_letters(text: str, label: str | None, how: str) -> None:
    assert extract_choice(text, LETTERS, PALMS) == (label, how)


@pytest.mark.parametrize(("text", "label", "how"), [
    ("The answer is (2).", "2", "final-answer"),
    ("Answer: 3", "3", "final-answer"),
    ("The answer is summer.", "3", "final-answer"),
    ("There are 4 seasons and it is cold in winter", "1", "option-text"),
    ("There are 4 seasons in a year", None, "none"),
    ("In 1990 and 2001 it snowed", None, "none"),
    ("The ratio is 1.5 to 3 here", None, "none"),
    ("So option 4 is it", "4", "last-label"),
    ("\\boxed{1}", "1", "boxed"),
    ("2", "2", "last-line"),
])
def test_extract_digits(text: str, label: str | None, how: str) -> None:
    assert extract_choice(text, DIGITS, SEASONS) == (label, how)


def test_labels_outside_the_set_do_not_count() -> None:
    three = ["A", "B", "C"]
    assert extract_choice("The answer is (D).", three) == (None, "none")
    assert extract_choice("The answer is (D). Or rather (B).", three) == ("B", "last-label")
    five = ["A", "B", "C", "D", "E"]
    assert extract_choice("The answer is (E).", five) == ("E", "final-answer")


def test_option_text_prefers_same_case_and_longer_options() -> None:
    genotypes = ["WW or ww", "WW or Ww", "WW only", "Ww only"]
    assert extract_choice("The answer is Ww only", LETTERS, genotypes) == ("D", "final-answer")
    assert extract_choice("so WW or Ww.", LETTERS, genotypes) == ("B", "option-text")
    # "oil" alone is inside the longer "palms covered with oil": only the longer counts
    options = ["oil", "water", "palms covered with oil", "sand"]
    assert extract_choice("I'd say palms covered with oil", LETTERS, options) == \
        ("C", "option-text")
    # a formula that starts with a label letter is an option text, not the label C
    formulas = ["C_{6}H_{12}O_{6} -> 6CO_{2}", "2H_{2}O -> 2H_{2}", "CO_{2}", "O_{2}"]
    assert extract_choice("The answer is C_{6}H_{12}O_{6} -> 6CO_{2}", LETTERS, formulas) == \
        ("A", "final-answer")


def test_without_option_texts() -> None:
    assert extract_choice("The answer is (B).", LETTERS) == ("B", "final-answer")
    assert extract_choice("wet palms", LETTERS) == (None, "none")


def test_label_at() -> None:
    texts = dict(zip(LETTERS, PALMS, strict=True))
    assert label_at("(b) and more", LETTERS, texts) == ("B", 3)
    assert label_at("B wet palms", LETTERS, texts) == ("B", 1)
    assert label_at("B is right", LETTERS, texts) == ("B", 1)
    assert label_at("Because", LETTERS, texts) is None
    assert label_at("A plant", LETTERS, texts) is None
    assert label_at("A - dry palms", LETTERS, texts) == ("A", 1)


def test_check_choice() -> None:
    assert check_choice("The answer is (B).", "B", LETTERS, PALMS) == \
        AnswerCheck("B", "final-answer", True)
    assert check_choice("The answer is (C).", "B", LETTERS, PALMS) == \
        AnswerCheck("C", "final-answer", False)
    assert check_choice("No idea.", "B", LETTERS, PALMS) == AnswerCheck(None, "none", False)
    assert check_choice("The answer is 2.", "2", DIGITS, SEASONS).correct
    assert not check_choice("The answer is B.", "2", DIGITS, SEASONS).correct
