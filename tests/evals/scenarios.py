"""The eval runs the execution tests share: short questions, completions data sources over them, and a
`score_model` grader that the registered SmolLM2 judges."""

from typing import Any

QUESTIONS = ["Name a fruit.", "Name an animal.", "Name a color.", "Name a tool."]


def questions(n: int) -> list[dict[str, Any]]:
    return [{"question": QUESTIONS[i % len(QUESTIONS)]} for i in range(n)]


ITEM_SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"]}


def completions(model: str, rows: list[dict[str, Any]], tokens: int) -> dict[str, Any]:
    return {
        "type": "completions",
        "model": model,
        "source": {"type": "file_content", "content": [{"item": row} for row in rows]},
        "input_messages": {
            "type": "template",
            "template": [{"role": "user", "content": "{{item.question}}"}],
        },
        "sampling_params": {"temperature": 0, "max_completion_tokens": tokens, "seed": 1},
    }


def judged_criterion() -> dict[str, Any]:
    """A score_model grader judged by the registered SmolLM2 through the judge endpoint (this server)."""
    return {
        "type": "score_model",
        "name": "judge",
        "model": "smollm2",
        "input": [
            {"role": "system", "content": "You grade answers. Reply with one number from 0 to 10."},
            {
                "role": "user",
                "content": "Question: {{item.question}}\nAnswer: {{sample.output_text}}\n"
                "How good is the answer, from 0 to 10?",
            },
        ],
        "range": [0, 10],
        "pass_threshold": 5,
        "sampling_params": {"temperature": 0, "max_completions_tokens": 8},
    }
