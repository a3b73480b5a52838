"""The deployment's trainer settings reach every trainer the server starts: set on the server, seen in the
job's events."""

from pathlib import Path

from tests.sdk.conftest import ALIGND_OPTIONS, MODEL, TERMINAL, Server, until


def test_the_servers_attention_setting_reaches_the_trainer(
    flex_attention: Server, preference_file: Path
) -> None:
    """ALIGND_TRAINER_ATTENTION=flex on the server: the trainer (on CPU) says it trains with SDPA instead
    and why, which it only does when it was asked for flex."""
    client = flex_attention.client(flex_attention.project_key("attention"))
    training = client.files.create(file=preference_file.open("rb"), purpose="fine-tune")
    hyperparameters = {"batch_size": 4, "max_steps": 1, "save_steps": 100000}
    created = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training.id,
        extra_body={
            "method": {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}},
            "alignd": ALIGND_OPTIONS,
        },
    )

    job = until(
        lambda: (j := client.fine_tuning.jobs.retrieve(created.id)).status in TERMINAL and j,
        "the job finished",
        timeout=240,
    )

    assert job.status == "succeeded", job.error
    warnings = [
        e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.level == "warn"
    ]
    assert any("FlexAttention cannot train on CPU" in m for m in warnings), warnings
