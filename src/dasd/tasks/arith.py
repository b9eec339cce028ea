"""Built-in arithmetic word problems: the default data set, no download needed.

Each problem follows one quantity (Mia's pencils, the bus's passengers, ...) through
`level` steps; a step is one +, -, * or exact / with a whole number, and every
intermediate result is a whole number from 1 to a few hundred. The reference solution
restates each step with its arithmetic and ends with "The answer is N.".

Splits are disjoint by construction: a question's text is hashed into one of ten
buckets (train 0-7, validation 8, test 9), and each split keeps only questions from its
own buckets. So no validation or test question ever appears in train, for any seed or
any limit; each split also draws from its own random stream, seeded by (seed, split).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from dasd.errors import DasdError
from dasd.scoring import AnswerCheck, answers
from dasd.tasks.base import Example, PromptTemplate, Task
from dasd.tasks.io import (
    check_limit,
    check_split,
    parse_level,
    require,
)
from dasd.tasks.prompts import NUMERIC_PROMPTS

SPLITS = ("train", "validation", "test")
_BUCKETS = {"train": range(0, 8), "validation": range(8, 9), "test": range(9, 10)}
DEFAULT_LIMIT = 500
MAX_VALUE = 300

GIRLS = ("Mia", "Ava", "Emma", "Lily", "Zoe", "Sofia", "Nora", "Grace", "Chloe", "Ella",
         "Hannah", "Maya", "Aisha", "Priya", "Lucia", "Yuki", "Fatima", "Rosa", "Amara", "Ines")
BOYS = ("Tom", "Leo", "Sam", "Ben", "Noah", "Omar", "Jack", "Lucas", "Ethan", "Ravi",
        "Diego", "Kenji", "Mateo", "Felix", "Hugo", "Kwame", "Ivan", "Arjun", "Owen", "Theo")
_TIMES = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
_PARTS = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}
_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_BUYABLE = ("kite", "book", "sandwich", "movie ticket", "board game", "hat", "puzzle", "scarf")


@dataclass(frozen=True)
class Theme:
    """One kind of story: what is counted, who holds it, and the sentences that change it.

    Sentences use str.format fields: {name} {He} {he} {him} {his} {His} (the holder),
    {thing} (a non-person holder), {friend}, {N} (the operand with its noun), {n} (the
    bare operand), {k} {times} {part} (* and / operands), {items}, {buyable}; result
    clauses also get {expr} and {R} (the result with its noun).
    """

    name: str
    nouns: tuple[tuple[str, str], ...]
    start: tuple[str, ...]
    ops: dict[str, tuple[str, ...]]
    result: tuple[str, ...]
    questions: tuple[str, ...]
    questions_left: tuple[str, ...] = ()
    things: tuple[str, ...] = ()


def _person(name: str, nouns: tuple[tuple[str, str], ...], start: tuple[str, ...],
            ops: dict[str, tuple[str, ...]], questions: tuple[str, ...],
            questions_left: tuple[str, ...] = ()) -> Theme:
    result = ("so {he} has {expr} = {R}", "so now {he} has {expr} = {R}")
    return Theme(name, nouns, start, ops, result, questions, questions_left)


_GENERIC_MUL = ("Later, {he} has {times} as many {items} as before.",)
_ASK_NOW = ("How many {items} does {name} have now?", "How many {items} does {name} end up with?",
            "How many {items} does {name} have in the end?")
_ASK_LEFT = ("How many {items} does {name} have left?", "How many {items} does {he} still have?")

THEMES: tuple[Theme, ...] = (
    _person(
        "objects",
        (("apple", "apples"), ("pencil", "pencils"), ("sticker", "stickers"), ("marble", "marbles"),
         ("seashell", "seashells"), ("stamp", "stamps"), ("baseball card", "baseball cards"),
         ("crayon", "crayons"), ("bead", "beads"), ("toy car", "toy cars"), ("book", "books"),
         ("balloon", "balloons"), ("button", "buttons"), ("candy", "candies")),
        ("{name} has {N}.", "{name} owns {N}.", "{name} starts with {N}.",
         "{name} keeps {N} in a box.", "At first, {name} has {N}."),
        {"add": ("{He} buys {n} more.", "{friend} gives {him} {N}.",
                 "{He} finds {N} on the way home.", "{He} gets {N} as a birthday present.",
                 "Then {he} wins {N} in a school game."),
         "sub": ("{He} gives {N} to {friend}.", "{He} loses {N}.", "{He} trades away {N}.",
                 "{He} sells {N} at a yard sale.", "{He} gives away {n} of them."),
         "mul": _GENERIC_MUL + ("{His} collection grows until it is {times} as big as it was.",),
         "div": ("{He} keeps {part} of the {items} and gives the rest away.",
                 "{He} splits the {items} into {k} equal piles and keeps one pile.")},
        _ASK_NOW + ("Find the number of {items} {name} has now.",), _ASK_LEFT),
    _person(
        "money", (("dollar", "dollars"),),
        ("{name} has {N}.", "{name} has saved {N}.", "{name} has {N} in {his} piggy bank.",
         "{name} starts the week with {N}."),
        {"add": ("{He} earns {N} walking a neighbor's dog.", "{His} aunt gives {him} {N}.",
                 "{He} gets paid {N} for mowing a lawn.", "{He} finds {N} in {his} coat pocket."),
         "sub": ("{He} spends {N} on a {buyable}.", "{He} pays {N} for a {buyable}.",
                 "{He} donates {N} to a charity.", "{He} lends {N} to {friend}."),
         "mul": ("After months of saving, {he} has {times} as much money as before.",
                 "{His} savings grow to {times} as much."),
         "div": ("{He} keeps {part} of {his} money and puts the rest in the bank.",
                 "{He} divides {his} money equally into {k} envelopes and keeps one envelope.")},
        ("How many dollars does {name} have now?",
         "How much money, in dollars, does {name} have at the end?",
         "How many dollars does {name} end up with?"),
        ("How many dollars does {name} have left?",)),
    _person(
        "baking",
        (("cookie", "cookies"), ("muffin", "muffins"), ("cupcake", "cupcakes"),
         ("pancake", "pancakes"), ("brownie", "brownies"), ("bagel", "bagels")),
        ("{name} bakes {N}.", "{name} makes {N} for a bake sale.", "{name} has {N} on a tray.",
         "{name} bakes a batch of {N}."),
        {"add": ("{He} bakes {n} more.", "{friend} brings {him} {N}.", "{He} makes another {N}.",
                 "{He} buys {N} from a bakery."),
         "sub": ("{He} sells {N} at the bake sale.", "{He} gives {N} to {his} neighbors.",
                 "{He} and {his} family eat {N}.", "{friend} takes {N} home."),
         "mul": _GENERIC_MUL + ("By the evening, {he} has baked enough to have {times} as many.",),
         "div": ("{He} keeps {part} of the {items} and gives the rest to {friend}.",
                 "{He} puts the {items} equally on {k} plates and keeps one plate.")},
        ("How many {items} does {name} have now?", "How many {items} does {name} have at the end?"),
        ("How many {items} are left?", "How many {items} does {name} have left?")),
    Theme(
        "vehicle", (("passenger", "passengers"),),
        ("A {thing} leaves the station with {N} on board.", "There are {N} on a {thing}.",
         "A {thing} starts its trip with {N}."),
        {"add": ("At the next stop, {N} get on.", "{N} board at the market.",
                 "At the school stop, another {N} get on."),
         "sub": ("At the next stop, {N} get off.", "{N} get off at the park.",
                 "At the hospital stop, {N} leave the {thing}."),
         "mul": ("After a big concert, there are {times} as many passengers on board.",
                 "At the stadium, the number of passengers becomes {times} as large."),
         "div": ("At the terminal, only {part} of the passengers stay on board.",)},
        ("so there are {expr} = {R} on board", "so the {thing} now carries {expr} = {R}"),
        ("How many passengers are on the {thing} now?",
         "How many passengers does the {thing} carry at the end?",
         "How many people are on the {thing} at the end of the trip?"),
        things=("bus", "train", "ferry", "tram")),
    _person(
        "farm",
        (("chicken", "chickens"), ("sheep", "sheep"), ("goat", "goats"), ("cow", "cows"),
         ("duck", "ducks"), ("rabbit", "rabbits"), ("pig", "pigs")),
        ("{name} has {N} on {his} farm.", "A farmer named {name} keeps {N}.", "{name} raises {N}."),
        {"add": ("{He} buys {N} at the market.", "{n} baby {items} are born.",
                 "{friend} gives {him} {N}."),
         "sub": ("{He} sells {N}.", "{He} gives {N} to a neighbor.", "{N} run away."),
         "mul": ("A few years later, {he} has {times} as many {items}.",
                 "The number of {items} on the farm becomes {times} as large."),
         "div": ("{He} keeps {part} of the {items} and sells the rest.",)},
        ("How many {items} does {name} have now?",
         "How many {items} are on {name}'s farm at the end?",
         "How many {items} does the farmer have in the end?")),
    _person(
        "garden",
        (("tomato", "tomatoes"), ("strawberry", "strawberries"), ("carrot", "carrots"),
         ("pepper", "peppers"), ("lemon", "lemons"), ("potato", "potatoes")),
        ("{name} picks {N} from {his} garden.", "{name} grows {N}.", "{name} harvests {N}."),
        {"add": ("{He} picks {n} more.", "{friend} gives {him} {N} from another garden.",
                 "The next day, {he} picks another {N}."),
         "sub": ("{He} uses {N} to make a salad.", "{He} gives {N} to {friend}.",
                 "{He} sells {N} at the market."),
         "mul": _GENERIC_MUL,
         "div": ("{He} keeps {part} of the {items} and shares the rest with {his} neighbors.",
                 "{He} puts the {items} equally into {k} baskets and keeps one basket.")},
        ("How many {items} does {name} have now?", "How many {items} does {name} have at the end?"),
        _ASK_LEFT),
    Theme(
        "library",
        (("book", "books"), ("magazine", "magazines"), ("comic", "comics"), ("map", "maps")),
        ("A {thing} has {N}.", "There are {N} in a {thing}.", "A small {thing} owns {N}."),
        {"add": ("It receives {N} as a donation.", "The {thing} buys {n} more.",
                 "Volunteers bring in another {N}."),
         "sub": ("The {thing} sells {N} at a fair.", "{N} are too damaged and get thrown away.",
                 "The {thing} gives {N} to a school."),
         "mul": ("After a big fundraiser, the {thing} has {times} as many {items}.",),
         "div": ("The {thing} keeps {part} of its {items} and sends the rest to another branch.",)},
        ("so the {thing} has {expr} = {R}", "so it has {expr} = {R}"),
        ("How many {items} does the {thing} have now?",
         "How many {items} are in the {thing} at the end?"),
        things=("library", "bookshop", "school library")),
)


@dataclass(frozen=True)
class _Story:
    """The fixed cast of one problem: theme, noun and the words for the holder."""

    theme: Theme
    noun: tuple[str, str]
    words: dict[str, str]

    def say(self, template: str, after: str = "", **values: object) -> str:
        """Fill `template`; right `after` a sentence naming the friend, "he" becomes the name."""
        words = dict(self.words)
        if words["friend"] in after:
            words["He"] = words["he"] = words["name"]
        return template.format(**words, **values)

    def count(self, value: int) -> str:
        return f"{value} {self.noun[0] if value == 1 else self.noun[1]}"


def _cast(rng: random.Random) -> _Story:
    theme = rng.choice(THEMES)
    noun = rng.choice(theme.nouns)
    girl = rng.random() < 0.5
    name = rng.choice(GIRLS if girl else BOYS)
    friend = rng.choice([n for n in GIRLS + BOYS if n != name])
    he, him, his = ("she", "her", "her") if girl else ("he", "him", "his")
    if theme.things:
        he, him, his = "it", "it", "its"
    words = {"name": name, "friend": friend, "he": he, "He": he.capitalize(), "him": him,
             "his": his, "His": his.capitalize(), "items": noun[1],
             "thing": rng.choice(theme.things) if theme.things else "",
             "buyable": rng.choice(_BUYABLE)}
    return _Story(theme, noun, words)


def _pick_step(rng: random.Random, value: int, level: int) -> tuple[str, int, int]:
    """(op, operand, result) for one valid step from `value`; results stay in 1..MAX_VALUE."""
    small = level == 1
    options = []
    if value + 2 <= MAX_VALUE:
        add = rng.randint(2, min(9 if small else 25, MAX_VALUE - value))
        options += [("add", add, value + add)] * 3
    if value >= 3:
        sub = rng.randint(2, min(value - 1, 9 if small else 25))
        options += [("sub", sub, value - sub)] * 3
    factors = [k for k in range(2, 4 if small else 6) if value * k <= (40 if small else 200)]
    if factors:
        k = rng.choice(factors)
        options += [("mul", k, value * k)] * 2
    divisors = [k for k in range(2, 6) if value % k == 0 and value // k >= 2]
    if divisors:
        k = rng.choice(divisors)
        options += [("div", k, value // k)] * 2
    return rng.choice(options)


def make_problem(rng: random.Random, level: int) -> tuple[str, str, int, dict[str, object]]:
    """(question, reference solution, answer, meta) of one problem with `level` steps."""
    story = _cast(rng)
    theme = story.theme
    value = rng.randint(2, 12 if level == 1 else 30)
    start = rng.randrange(len(theme.start))
    first = story.say(theme.start[start], N=story.count(value), n=value)
    question, reference = [first], [first]
    used, steps = [f"{theme.name}.start.{start}"], []
    for _ in range(level):
        op, operand, result = _pick_step(rng, value, level)
        choice = _fresh_choice(rng, theme.ops[op], f"{theme.name}.{op}.", used)
        sentence = story.say(theme.ops[op][choice], question[-1], N=story.count(operand),
                             n=operand, k=operand, times=_TIMES.get(operand, ""),
                             part=_PARTS.get(operand, ""))
        clause = story.say(rng.choice(theme.result), sentence, R=story.count(result),
                           expr=f"{value} {_SYMBOLS[op]} {operand}")
        question.append(sentence)
        reference.append(f"{sentence[:-1]}, {clause}.")
        used.append(f"{theme.name}.{op}.{choice}")
        steps.append(_SYMBOLS[op])
        value = result
    asks = theme.questions + (theme.questions_left if op in ("sub", "div") else ())
    ask = rng.randrange(len(asks))
    question.append(story.say(asks[ask], question[-1]))
    used.append(f"{theme.name}.ask.{asks[ask]}")
    reference.append(f"The answer is {value}.")
    meta = {"theme": theme.name, "steps": steps, "templates": used}
    return " ".join(question), "\n".join(reference), value, meta


def _fresh_choice(rng: random.Random, sentences: tuple[str, ...], prefix: str,
                  used: list[str]) -> int:
    """Index of a sentence not yet used in this problem (any, once all are used)."""
    fresh = [i for i in range(len(sentences)) if f"{prefix}{i}" not in used]
    return rng.choice(fresh or range(len(sentences)))


def _bucket(question: str) -> int:
    """Stable 0-9 bucket of a question's text (sha256, so independent of PYTHONHASHSEED)."""
    return hashlib.sha256(question.encode("utf-8")).digest()[0] % 10


def generate(split: str, count: int, seed: int = 0) -> list[Example]:
    """`count` distinct problems of `split`, levels cycling 1, 2, 3, 4, 5, 1, ..."""
    rng = random.Random(f"dasd-arith:{seed}:{split}")
    seen: set[str] = set()
    examples = []
    while len(examples) < count:
        level = len(examples) % 5 + 1
        question, reference, answer, meta = make_problem(rng, level)
        if question in seen or _bucket(question) not in _BUCKETS[split]:
            continue
        seen.add(question)
        examples.append(Example(f"arith-{split}-{len(examples):05d}", question, reference,
                                str(answer), level, meta))
    return examples


def _from_rows(rows: list[dict[str, Any]], split: str, source_of: Callable[[int], str]
               ) -> list[Example]:
    """Examples from rows with question, reference (or solution), answer, optional level/id."""
    examples = []
    for i, row in enumerate(rows):
        source = source_of(i)
        ref_field = "solution" if "reference" not in row and "solution" in row else "reference"
        require(row, ("question", ref_field, "answer"), source, reference=ref_field)
        examples.append(Example(str(row.get("id") or f"arith-{split}-{i:05d}"), row["question"],
                                row[ref_field], str(row["answer"]),
                                parse_level(row.get("level"), source)))
    return examples


class ArithTask(Task):
    """Generated grade-school arithmetic, levels 1-5 = number of steps."""

    name: ClassVar[str] = "arith"
    prompts: ClassVar[PromptTemplate] = NUMERIC_PROMPTS
    fields: ClassVar[tuple[str, ...]] = ("question", "reference", "solution", "answer", "level",
                                         "id")

    def load(self, split: str, path: str | None = None, limit: int | None = None,
             seed: int = 0, **rows: Any) -> list[Example]:
        """Generated problems (`limit` defaults to 500), or the rows of `path` (or of
        `rows["dataset_name"]`, see `Task.load`) when given."""
        if path is not None or rows.get("dataset_name") is not None:
            return super().load(split, path, limit, seed, **rows)
        if rows.get("columns"):
            raise DasdError("columns rename the columns of your rows, but arith generates its "
                            "problems: give rows with --data or --dataset-name, or unset columns")
        check_split(self.name, split, SPLITS)
        check_limit(limit)
        return generate(split, DEFAULT_LIMIT if limit is None else limit, seed)

    def examples(self, rows: list[dict[str, Any]], split: str, limit: int | None,
                 source: Callable[[int], str]) -> list[Example]:
        return _from_rows(rows[:limit], split, source)

    def generates(self, path: str | None) -> bool:
        return path is None

    def check(self, response: str, example: Example) -> AnswerCheck:
        return answers.check_numeric(response, example.answer)
