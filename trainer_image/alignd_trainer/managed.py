"""The managed-run environment contract (DESIGN.md section 7), read in one place."""

from collections.abc import Mapping
from dataclasses import dataclass

from alignd_trainer.errors import BadInputError

MANAGED_ENV = ("ALIGND_JOB_ID", "ALIGND_API_URL", "ALIGND_JOB_TOKEN")


@dataclass(frozen=True)
class ManagedJob:
    job_id: str
    api_url: str
    token: str

    def __repr__(self) -> str:
        return f"ManagedJob(job_id={self.job_id!r}, api_url={self.api_url!r})"


def managed_job(environ: Mapping[str, str]) -> ManagedJob | None:
    """The job the launcher started this trainer for, or None for an offline run.

    A partial set means a broken launcher or a hand-run pod; failing fast beats a managed job that
    trains silently and is then killed for not reporting.
    """
    present = [name for name in MANAGED_ENV if environ.get(name)]
    if not present:
        return None
    missing = [name for name in MANAGED_ENV if not environ.get(name)]
    if missing:
        raise BadInputError(
            f"managed mode needs all of {', '.join(MANAGED_ENV)}; missing: {', '.join(missing)} "
            "(set all three to report to the control plane, or none for an offline run)"
        )
    return ManagedJob(environ["ALIGND_JOB_ID"], environ["ALIGND_API_URL"], environ["ALIGND_JOB_TOKEN"])
