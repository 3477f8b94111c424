"""Celery entry points: each calls one service."""

from __future__ import annotations

from celery import shared_task

from ledger import services
from ledger.audit import ledger_audit


@shared_task(acks_late=True, ignore_result=True)
def ledger_seal_task() -> int:
    """Seal pending leaves and gather cosignatures; returns how many checkpoints were made."""
    return len(services.ledger_seal_and_cosign())


@shared_task(acks_late=True, ignore_result=True)
def ledger_audit_task() -> bool:
    report = ledger_audit()
    return report.ok
