"""Celery entry points for claims: each calls one service."""

from __future__ import annotations

from celery import shared_task


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def claim_verify_task(self, claim_id: int) -> None:
    """Verify a claim; placeholder until claims.verification lands (it only records receipt)."""
    return None
