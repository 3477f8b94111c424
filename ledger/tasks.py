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
    """The nightly check of the ledger and of the audit trail anchored on it."""
    from audit.verify import audit_verify

    report = ledger_audit()
    problems = [f"ledger audit: {p}" for p in report.problems]
    if report.ok:
        log.info("ledger audit: OK (%s leaves, %s checkpoints)", report.leaves, report.checkpoints)
    trail = audit_verify()
    problems += [f"audit trail: {p}" for p in trail.problems]
    if trail.ok:
        log.info("audit trail: OK (%s entries, %s anchors)", trail.entries, trail.anchors)
    for problem in problems:
        log.error("%s", problem)
    if problems:
        raise LedgerMismatch(f"{len(problems)} problem(s); see the log")
