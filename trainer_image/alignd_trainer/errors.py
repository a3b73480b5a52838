"""Errors that map to the trainer's documented exit codes."""

from alignd.contract import ExitCode


class TrainerError(Exception):
    """An error with an exit code and a message a user can act on."""

    exit_code: ExitCode = ExitCode.INTERNAL
    reason: str = "Error"


class BadInputError(TrainerError):
    """The spec, data or base model is unusable; retrying cannot help."""

    exit_code = ExitCode.BAD_INPUT
    reason = "BadInput"


class InfrastructureError(TrainerError):
    """Storage, network or control-plane failure; a retry resumes from the last checkpoint."""

    exit_code = ExitCode.INFRASTRUCTURE
    reason = "Infrastructure"


class Terminated(TrainerError):
    """SIGTERM arrived (cancel, pause, preemption); a checkpoint was saved first."""

    exit_code = ExitCode.TERMINATED
    reason = "Terminated"


class OutOfMemory(TrainerError):
    exit_code = ExitCode.OUT_OF_MEMORY
    reason = "OutOfMemory"
