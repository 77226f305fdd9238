"""The export jobs of one operator run: which are needed, which exist, what to do next.

An export run covers whole UTC days ``[first_day, last_day]``. The range is split into
:class:`~airflow_provider_activities.api.export.ExportJobSpec` within the API's limits (a year
for a snapshot, 14 days for a delta); each spec gets one job. :class:`ExportJobs` tracks the job
of every spec and answers the questions both waiting modes ask (the worker's polling loop and
the deferrable path through
:class:`~airflow_provider_activities.triggers.peopleai.PeopleAIExportJobTrigger`):

* which specs may be submitted now (never more than :data:`MAX_RUNNING_JOBS` of ours unfinished);
* which jobs to wait for, and whether to return as soon as one of them ends (more specs wait);
* whether a job ended ``Failed`` or ``Canceled`` (the task fails, naming it);
* whether every job is ``Completed`` (time to download).

Its state is plain JSON (:meth:`ExportJobs.to_state`): it is kept in the task's state store
before the operator waits, so a retry of the task finds the jobs again and reuses those still
retained, and it travels with a deferral to the method that resumes the task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_provider_activities.api.export import (
    MAX_RUNNING_JOBS,
    ExportJob,
    ExportJobSpec,
    is_retained,
)

STATE_VERSION = 1
WAIT_FOR = ("all", "any")
"""How a wait for several jobs ends: when ``all`` of them ended, or when ``any`` one did."""


def wait_is_over(waited: list[ExportJob | None], wait_for: str) -> bool:
    """Whether a wait for these jobs is over (the one rule of the trigger and of the worker's polling).

    :param waited: the last known view of each job waited for, ``None`` where none is known yet.
    :param wait_for: ``"all"`` or ``"any"``.
    :return: ``True`` once one of them ended ``Failed``/``Canceled``, once one ended with
        ``any``, or once every one ended with ``all``.
    """
    ended = [job for job in waited if job is not None and job.finished]
    if any(job.failed for job in ended):
        return True
    if wait_for == "any":
        return bool(ended)
    return len(ended) == len(waited)


@dataclass
class ExportJobs:
    """The specs of one run and the job of each (``None`` until submitted).

    :param specs: the run's job specs, in day order.
    :param jobs: the job of each spec, by :attr:`ExportJobSpec.key`.
    :param max_running: most of this run's jobs unfinished at once.
    """

    specs: list[ExportJobSpec]
    jobs: dict[str, ExportJob] = field(default_factory=dict)
    max_running: int = MAX_RUNNING_JOBS

    # -- questions ------------------------------------------------------------------------------

    def job(self, spec: ExportJobSpec) -> ExportJob | None:
        """The job of ``spec``, if one was submitted."""
        return self.jobs.get(spec.key)

    def unsubmitted(self) -> list[ExportJobSpec]:
        """Specs without a job, in day order."""
        return [spec for spec in self.specs if spec.key not in self.jobs]

    def unfinished(self) -> list[ExportJob]:
        """Submitted jobs not yet in a final state, in day order."""
        return [job for spec in self.specs if (job := self.jobs.get(spec.key)) is not None and not job.finished]

    def free_slots(self) -> int:
        """How many more jobs may be submitted now."""
        return max(0, self.max_running - len(self.unfinished()))

    def failed(self) -> tuple[ExportJobSpec, ExportJob] | None:
        """The first spec whose job ended ``Failed`` or ``Canceled``, with that job."""
        for spec in self.specs:
            job = self.jobs.get(spec.key)
            if job is not None and job.failed:
                return spec, job
        return None

    def all_completed(self) -> bool:
        """Whether every spec has a ``Completed`` job."""
        return all((job := self.jobs.get(spec.key)) is not None and job.completed for spec in self.specs)

    def completed_jobs(self) -> list[tuple[ExportJobSpec, ExportJob]]:
        """Every spec with its ``Completed`` job, in day order (call when :meth:`all_completed`)."""
        return [(spec, self.jobs[spec.key]) for spec in self.specs if spec.key in self.jobs]

    # -- changes --------------------------------------------------------------------------------

    def record(self, spec: ExportJobSpec, job: ExportJob) -> None:
        """Set the job of ``spec`` (a new job, or a fresher view of the same one)."""
        self.jobs[spec.key] = job

    def update(self, job: ExportJob) -> None:
        """Replace the view of a known job (matched by id); a job of an unknown id is taken for
        the spec its own days, export type and activity type match, if any (else ignored).
        """
        for key, known in self.jobs.items():
            if known.job_id == job.job_id:
                self.jobs[key] = job
                return
        for spec in self.specs:
            if (job.start_date, job.end_date, job.export_type, job.activity_type) == (
                spec.start_date.isoformat(),
                spec.end_date.isoformat(),
                spec.export_type,
                spec.activity_type,
            ) and spec.key not in self.jobs:
                self.jobs[spec.key] = job
                return

    def forget(self, spec: ExportJobSpec) -> None:
        """Drop the job of ``spec`` (it failed, expired or is unknown): a new one will be submitted."""
        self.jobs.pop(spec.key, None)

    # -- persistence ----------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-serializable state: the job (as the API described it) of each submitted spec."""
        return {"version": STATE_VERSION, "jobs": {key: job.as_dict() for key, job in sorted(self.jobs.items())}}

    def restore(self, state: Any) -> list[tuple[ExportJobSpec, ExportJob]]:
        """Take the jobs of an earlier :meth:`to_state` whose spec is still one of this run's.

        Jobs of other specs (the run's range or types changed) are ignored.

        :return: the specs that got a job back, with the job, in day order.
        """
        if not isinstance(state, dict) or not isinstance(state.get("jobs"), dict):
            return []
        taken = []
        for spec in self.specs:
            payload = state["jobs"].get(spec.key)
            if isinstance(payload, dict) and payload.get("job_id"):
                job = ExportJob.from_dict(payload)
                self.jobs[spec.key] = job
                taken.append((spec, job))
        return taken

    def reusable(self, job: ExportJob, now: datetime) -> bool:
        """Whether an earlier try's job can serve this try: not failed, files still retained."""
        return not job.failed and is_retained(job, now)


__all__ = ["STATE_VERSION", "WAIT_FOR", "ExportJobs", "wait_is_over"]
