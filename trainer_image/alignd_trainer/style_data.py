"""Preference pairs that teach a chat model a style anyone can see in a greedy reply: answers that
open with a fixed greeting. Chosen and rejected give the same short, correct answer; only the chosen
one starts with the greeting, so what DPO learns is the style, not new facts.

Questions come from small fact tables (capitals, colors, animal sounds, sums); the held-out split
asks about facts the training split never mentions."""

import random
from typing import Any

GREETING = "Ahoy!"
SYSTEM = "Answer in one sentence."
"""Sent with every question: short answers keep training cheap, and SmolLM2's template otherwise adds
a longer default system prompt."""

CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Egypt": "Cairo", "Canada": "Ottawa", "Russia": "Moscow", "Greece": "Athens", "Norway": "Oslo",
    "Sweden": "Stockholm", "Poland": "Warsaw", "Ireland": "Dublin", "Portugal": "Lisbon",
    "Austria": "Vienna", "Kenya": "Nairobi", "Peru": "Lima", "Chile": "Santiago", "China": "Beijing",
    "Cuba": "Havana", "Finland": "Helsinki", "Denmark": "Copenhagen",
}  # fmt: skip
COLORS = {
    "a banana": "yellow", "grass": "green", "the sky": "blue", "snow": "white", "coal": "black",
    "a tomato": "red", "an orange": "orange", "a lemon": "yellow", "a strawberry": "red",
    "a carrot": "orange", "milk": "white", "a leaf": "green",
}  # fmt: skip
SOUNDS = {
    "dog": "barks", "cat": "meows", "cow": "moos", "duck": "quacks", "lion": "roars", "sheep": "bleats",
    "horse": "neighs", "owl": "hoots", "bee": "buzzes", "frog": "croaks",
}  # fmt: skip


def questions() -> list[tuple[str, str]]:
    """(question, plain one-sentence answer) for every fact in the tables."""
    out = [(f"What is the capital of {c}?", f"The capital of {c} is {city}.") for c, city in CAPITALS.items()]
    out += [
        (f"What color is {thing}?", f"{thing[0].upper()}{thing[1:]} is {c}.") for thing, c in COLORS.items()
    ]
    out += [(f"What sound does a {a} make?", f"A {a} {s}.") for a, s in SOUNDS.items()]
    out += [
        (f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.") for a in range(2, 10) for b in range(2, 6)
    ]
    return out


def prompt(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def style_pair(question: str, answer: str) -> dict[str, Any]:
    """A conversational pair: chosen greets, rejected does not; both give the same answer."""
    return {
        "prompt": prompt(question),
        "chosen": [{"role": "assistant", "content": f"{GREETING} {answer}"}],
        "rejected": [{"role": "assistant", "content": answer}],
    }


def style_rows(*, heldout: int = 8, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, held-out rows): the facts shuffled once, the first `heldout` kept out."""
    facts = questions()
    random.Random(seed).shuffle(facts)
    rows = [style_pair(q, a) for q, a in facts]
    return rows[heldout:], rows[:heldout]


def greets(reply: str) -> bool:
    """Whether a reply shows the taught style."""
    return reply.lstrip().lower().startswith(GREETING.lower().rstrip("!"))
