"""Re-verify claims in a batch job: ``manage.py verify_claims --all --wait``.

Scope: ``--all``, ``--provider N``, ``--kid K``, ``--since``/``--until`` (ISO 8601, on the claims'
receipt), ``--checkpoint SIZE``; the options combine. ``--wait`` follows the job with a progress
bar on one line; ``--export JOB_ID`` writes the claims whose verdict a job changed, as CSV;
``--cancel JOB_ID`` stops a queued or running job (exit status 1 when it had already ended).
"""

from __future__ import annotations

import csv
import time

from django.core.management.base import BaseCommand, CommandError

from config.errors import DomainError
from jobs import services
from jobs.models import BatchJob

WIDTH = 30


def bar(p: dict) -> str:
    """``[#######.......]  120/500  24.0%  35.2/s  ETA 0:00:11``."""
    filled = int(WIDTH * p["done"] / p["total"]) if p["total"] else 0
    eta = "--:--" if p["eta_s"] is None else _clock(p["eta_s"])
    total = f"{p['total']}" + ("" if p["planned"] else "+")
    return (
        f"[{'#' * filled}{'.' * (WIDTH - filled)}] {p['done']}/{total} {p['percent']:5.1f}% "
        f"{p['rate_per_s']:.1f}/s ETA {eta}  passed {p['passed']} failed {p['failed']} "
        f"changed {p['changed']}"
    )


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Command(BaseCommand):
    help = "Start a batch re-verification job (and follow it with --wait), or export one's changes."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="every claim")
        parser.add_argument("--provider", type=int, help="one provider's claims (its id)")
        parser.add_argument("--kid", help="everything signed with this key")
        parser.add_argument("--since", help="claims received at or after (ISO 8601)")
        parser.add_argument("--until", help="claims received before (ISO 8601)")
        parser.add_argument("--checkpoint", type=int, help="claims proven against this tree size")
        parser.add_argument("--reason", default="", help="why (recorded on the job)")
        parser.add_argument("--wait", action="store_true", help="follow the job to its end")
        parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
        parser.add_argument(
            "--export",
            type=int,
            metavar="JOB_ID",
            help="write the claims whose verdict JOB_ID changed, as CSV",
        )
        parser.add_argument(
            "--cancel",
            type=int,
            metavar="JOB_ID",
            help="cancel JOB_ID: chunks not started do nothing (--reason says why)",
        )

    def handle(self, *args, **opts):
        if opts["export"] is not None:
            return self._export(opts["export"])
        if opts["cancel"] is not None:
            return self._cancel(opts["cancel"], opts["reason"])
        scope = {
            k: opts[k]
            for k in ("provider", "kid", "since", "until", "checkpoint")
            if opts[k] is not None
        }
        if opts["all"]:
            if scope:
                raise CommandError("--all takes no other scope option")
            scope = {"all": True}
        if not scope:
            raise CommandError(
                "say which claims: --all, --provider, --kid, --since/--until, or --checkpoint"
            )
        try:
            job = services.job_start(scope, None, reason=opts["reason"] or "manage.py")
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"job {job.pk} queued: {job.scope}")
        if opts["wait"]:
            self._follow(job, opts["interval"])

    def _follow(self, job: BatchJob, interval: float) -> None:
        finished = {BatchJob.Status.DONE, BatchJob.Status.FAILED, BatchJob.Status.CANCELLED}
        tty = getattr(self.stdout, "isatty", lambda: False)()
        last = ""
        while True:
            job.refresh_from_db()
            line = bar(services.job_progress(job))
            if line != last or tty:
                self.stdout.write("\r" + line, ending="")
                self.stdout.flush()
                last = line
            if job.status in finished:
                break
            time.sleep(interval)
        self.stdout.write("")
        self.stdout.write(f"job {job.pk} {job.status}")
        if job.changed:
            self.stdout.write(
                f"{job.changed} verdicts changed: manage.py verify_claims --export {job.pk}"
            )
        if job.status != BatchJob.Status.DONE:
            raise CommandError(f"job {job.pk} ended {job.status}")

    def _export(self, job_id: int) -> None:
        job = BatchJob.objects.filter(pk=job_id).first()
        if job is None:
            raise CommandError(f"no job {job_id}")
        writer = csv.writer(self.stdout, lineterminator="\n")
        for row in services.job_changes_rows(job):
            writer.writerow(row)

    def _cancel(self, job_id: int, reason: str) -> None:
        job = BatchJob.objects.filter(pk=job_id).first()
        if job is None:
            raise CommandError(f"no job {job_id}")
        try:
            job = services.job_cancel(job, None, reason=reason or "manage.py")
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"job {job.pk} cancelled after {job.done} of {job.total} claims")
