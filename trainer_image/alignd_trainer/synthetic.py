"""Synthetic preference data with a rule a small model can learn: the chosen answer names a
thing of the asked category, the rejected one a thing of another category."""

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

CATEGORIES: dict[str, list[str]] = {
    "fruit": ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"],
    "animal": ["cat", "dog", "horse", "tiger", "zebra", "camel", "otter", "rabbit"],
    "color": ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"],
    "tool": ["hammer", "saw", "drill", "wrench", "chisel", "pliers", "ruler", "shovel"],
}
TEMPLATES = ["Name a {c}.", "Give me one {c}.", "Which {c} do you like?", "Say a {c}:"]


def corpus() -> Iterator[str]:
    """Text to train the tiny tokenizer on."""
    for category, words in CATEGORIES.items():
        for template in TEMPLATES:
            for word in words:
                yield f"{template.format(c=category)} {word}. I like the {word}."


def preference_rows(
    n: int, *, seed: int = 0, fmt: Literal["standard", "conversational", "openai"] = "standard"
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    names = list(CATEGORIES)
    rows: list[dict[str, Any]] = []
    for _ in range(n):
        category = rng.choice(names)
        other = rng.choice([c for c in names if c != category])
        prompt = rng.choice(TEMPLATES).format(c=category)
        good, bad = rng.choice(CATEGORIES[category]), rng.choice(CATEGORIES[other])
        if fmt == "standard":
            rows.append({"prompt": prompt, "chosen": f" {good}.", "rejected": f" {bad}."})
        elif fmt == "conversational":
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": f"{good}."}],
                    "rejected": [{"role": "assistant", "content": f"{bad}."}],
                }
            )
        else:
            rows.append(
                {
                    "input": {"messages": [{"role": "user", "content": prompt}]},
                    "preferred_output": [{"role": "assistant", "content": f"{good}."}],
                    "non_preferred_output": [{"role": "assistant", "content": f"{bad}."}],
                }
            )
    return rows


def chat_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Chat rows (OpenAI's SFT format) teaching the same rule: the answer names a thing of the asked
    category, ended the way the corpus ends it ("I like the <thing>.")."""
    rng = random.Random(seed)
    names = list(CATEGORIES)
    rows: list[dict[str, Any]] = []
    for _ in range(n):
        category = rng.choice(names)
        word = rng.choice(CATEGORIES[category])
        prompt = rng.choice(TEMPLATES).format(c=category)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": f"{word}. I like the {word}."},
                ]
            }
        )
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    out = Path(path)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out


FIND_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "find_thing",
        "description": "Finds a thing of a category.",
        "parameters": {
            "type": "object",
            "properties": {"category": {"type": "string", "enum": list(CATEGORIES)}},
            "required": ["category"],
        },
    },
}


def _call(call_id: str, category: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "find_thing", "arguments": json.dumps({"category": category})},
            }
        ],
    }


def tool_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """OpenAI-format rows offering `FIND_TOOL`, alternating two kinds: the chosen answer calls the tool with
    the asked category (the rejected one with another); or the prompt already holds the call and the tool's
    answer, and the chosen answer names the thing the tool found."""
    rng = random.Random(seed)
    names = list(CATEGORIES)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        category = rng.choice(names)
        other = rng.choice([c for c in names if c != category])
        user = {"role": "user", "content": rng.choice(TEMPLATES).format(c=category)}
        if i % 2 == 0:
            messages = [user]
            chosen, rejected = _call(f"call_{i}", category), _call(f"call_{i}", other)
        else:
            good, bad = rng.choice(CATEGORIES[category]), rng.choice(CATEGORIES[other])
            answer = {"role": "tool", "tool_call_id": f"call_{i}", "content": good}
            messages = [user, _call(f"call_{i}", category), answer]
            chosen = {"role": "assistant", "content": f"{good}."}
            rejected = {"role": "assistant", "content": f"{bad}."}
        rows.append(
            {
                "input": {
                    "messages": messages,
                    "tools": [copy.deepcopy(FIND_TOOL)],
                    "parallel_tool_calls": False,
                },
                "preferred_output": [chosen],
                "non_preferred_output": [rejected],
            }
        )
    return rows
