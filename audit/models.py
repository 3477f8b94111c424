"""The audit trail: every action on claims, keys and money, with who, when, what and why."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor_label = models.CharField(max_length=150, help_text="who, as named when it happened")
    action = models.CharField(max_length=50)
    target = models.CharField(max_length=120, help_text='what, e.g. "claim:<uuid>", "key:<kid>"')
    why = models.TextField(blank=True)
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["target", "id"], name="audit_by_target")]
