"""Pay approved claims: ``manage.py payment_run --period 2026-11-25 --wait``.

``--period`` is the UTC day the run pays up to (default: today); a period is paid once.
``--wait`` follows the run (settled by the Celery workers) with a progress bar on one line;
``--inline`` settles it in this process instead, with the same bar (no worker needed).
``--remittance RUN_ID`` writes a run's remittance as CSV.
"""

from __future__ import annotations

import csv
import time

from django.core.management.base import BaseCommand, CommandError

from config.errors import DomainError
from payments import services
from payments.models import PaymentRun

WIDTH = 30


def bar(p: dict) -> str:
    """``[#######.......]  120/500  24.0%  35.2/s  ETA 0:00:11  settled 120 errors 0``."""
    filled = int(WIDTH * p["done"] / p["total"]) if p["total"] else 0
    if p["status"] in services.FINISHED and not p["errors"]:
        filled = WIDTH
    eta = "--:--" if p["eta_s"] is None else _clock(p["eta_s"])
    total = f"{p['total']}" + ("" if p["collected"] else "+")
    amounts = " ".join(f"{t['settled_amount']} {t['currency']}" for t in p["totals"])
    return (
        f"[{'#' * filled}{'.' * (WIDTH - filled)}] {p['done']}/{total} {p['percent']:5.1f}% "
        f"{p['rate_per_s']:.1f}/s ETA {eta}  settled {p['settled']} errors {p['errors']}"
        + (f"  paid {amounts}" if amounts else "")
    )


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Command(BaseCommand):
    help = "Start the payment run of a period (and follow it), or export a run's remittance."

    def add_arguments(self, parser):
        parser.add_argument("--period", help="the UTC day paid up to, YYYY-MM-DD (default today)")
        parser.add_argument("--reason", default="", help="why (recorded on the run)")
        parser.add_argument("--wait", action="store_true", help="follow the run to its end")
        parser.add_argument(
            "--inline", action="store_true", help="settle in this process (no worker needed)"
        )
        parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
        parser.add_argument(
            "--remittance", type=int, metavar="RUN_ID", help="write RUN_ID's remittance as CSV"
        )

    def handle(self, *args, **opts):
        if opts["remittance"] is not None:
            return self._remittance(opts["remittance"])
        try:
            run = services.payment_run_start(opts["period"], None, reason=opts["reason"] or "")
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"payment run {run.pk} for {run.period} planned")
        if opts["inline"]:
            self._inline(run)
        elif opts["wait"]:
            self._follow(run, opts["interval"])

    def _show(self, run: PaymentRun, last: str) -> str:
        run.refresh_from_db()
        line = bar(services.payment_progress(run))
        if line != last:
            self.stdout.write("\r" + line, ending="")
            self.stdout.flush()
        return line

    def _inline(self, run: PaymentRun) -> None:
        chunks: list[int] = []
        services.payment_run_collect(run.pk, dispatch=chunks.append)
        last = self._show(run, "")
        for chunk_id in chunks:
            services.payment_chunk_settle(chunk_id)
            last = self._show(run, last)
        self._end(run)

    def _follow(self, run: PaymentRun, interval: float) -> None:
        last = ""
        while True:
            last = self._show(run, last)
            if run.status in services.FINISHED:
                break
            time.sleep(interval)
        self._end(run)

    def _end(self, run: PaymentRun) -> None:
        run.refresh_from_db()
        self.stdout.write("")
        self.stdout.write(f"payment run {run.pk} {run.status}: {run.settled} payouts settled")
        if run.status != PaymentRun.Status.SETTLED:
            raise CommandError(f"payment run {run.pk} ended {run.status}: {run.error}")
        self.stdout.write(f"remittance: manage.py payment_run --remittance {run.pk}")

    def _remittance(self, run_id: int) -> None:
        run = PaymentRun.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"no payment run {run_id}")
        writer = csv.writer(self.stdout, lineterminator="\n")
        for row in services.remittance_rows(run):
            writer.writerow(row)
