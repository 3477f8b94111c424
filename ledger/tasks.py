"""Celery entry points: each calls one service."""

from __future__ import annotations

import logging

from celery import shared_task

from ledger import services
from ledger.audit import ledger_audit

log = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def ledger_seal_task() -> int:
    """Seal pending leaves and gather cosignatures; returns how many checkpoints were made."""
    return len(services.ledger_seal_and_cosign())


class LedgerMismatch(Exception):
    """The nightly audit found the ledger altered: the task fails loudly."""


@shared_task(acks_late=True, ignore_result=True)
def ledger_audit_task() -> None:
    report = ledger_audit()
    if report.ok:
        log.info("ledger audit: OK (%s leaves, %s checkpoints)", report.leaves, report.checkpoints)
        return
    for problem in report.problems:
        log.error("ledger audit: %s", problem)
    raise LedgerMismatch(f"{len(report.problems)} problem(s); see the log")
