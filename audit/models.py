"""The audit trail: every action on claims, keys and money, with who, when, what and why.

Entries are written cheaply and concurrently (no chain at insert time). Each seal of the ledger
chains the entries written since the last one, in id order: it gives each a sequence number and
``hash = SHA-256(previous hash || RFC 8785 JSON of the entry)``, then anchors the chain's head as
one ledger leaf (:class:`ChainAnchor`). See docs/audit-trail.md.

Append-only: the model layer refuses updates and deletes; on PostgreSQL triggers refuse DELETE,
TRUNCATE and any UPDATE other than the one that chains an entry (migration 0002).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class AppendOnlyError(Exception):
    """Someone tried to change or delete the audit trail."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are never updated")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} rows are never deleted")

    _raw_delete = delete

    def bulk_update(self, *args, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are never updated")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are never updated")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are never deleted")


class AuditEntry(AppendOnlyModel):
    at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor_label = models.CharField(max_length=150, help_text="who, as named when it happened")
    action = models.CharField(max_length=50)
    target = models.CharField(max_length=120, help_text='what, e.g. "claim:<uuid>", "key:<kid>"')
    why = models.TextField(blank=True)
    data = models.JSONField(default=dict)
    # Set once, by the seal that chains the entry (audit.chain), never changed afterwards.
    seq = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)
    hash = models.BinaryField(max_length=32, null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["target", "id"], name="audit_by_target"),
            models.Index(fields=["action", "id"], name="audit_by_action"),
            models.Index(fields=["actor_label", "id"], name="audit_by_actor"),
            models.Index(fields=["at"], name="audit_by_time"),
            # What the next seal chains: a small partial index, whatever the trail's length.
            models.Index(fields=["id"], condition=Q(seq__isnull=True), name="audit_unchained"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(seq__isnull=True, hash__isnull=True)
                | Q(seq__isnull=False, seq__gte=1, hash__isnull=False),
                name="audit_chained_whole",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target} by {self.actor_label}"

    @property
    def chained(self) -> bool:
        return self.seq is not None


class ChainAnchor(AppendOnlyModel):
    """The chain's head at ``seq`` was anchored on the ledger as leaf ``leaf_index``."""

    seq = models.BigIntegerField(unique=True)
    head = models.BinaryField(max_length=32)
    leaf_index = models.BigIntegerField(unique=True)
    member = models.CharField(max_length=120, help_text="the member whose key signed the leaf")
    anchored_at = models.DateTimeField()

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"audit head #{self.seq} at leaf {self.leaf_index}"
