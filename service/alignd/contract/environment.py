"""What the server tells a trainer through its environment, beyond who it is: the deployment's trainer
settings (`alignd.runs.trainer_env` sets them, the trainer reads them)."""

from enum import StrEnum

ATTENTION_ENV = "ALIGND_TRAINER_ATTENTION"


class AttentionKernel(StrEnum):
    """The attention kernel for packed rows (`alignd_trainer.attention`)."""

    auto = "auto"
    sdpa = "sdpa"
    flex = "flex"
    varlen = "varlen"
