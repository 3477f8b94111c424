"""The ledger's tables. Leaves, stored subtree hashes, checkpoints and cosignatures are append-only:
the model layer refuses updates and deletes, and on PostgreSQL a trigger does too (migration 0002).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from ledger import note


class AppendOnlyError(Exception):
    """Someone tried to change or delete history."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are never updated")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} rows are never deleted")

    _raw_delete = delete


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


note_name = RegexValidator(
    r"^[^\s+]+$", "A name has no spaces and no '+' (the Go note key format)."
)


class Member(models.Model):
    """A consortium member: it anchors procedures, and may witness (cosign) checkpoints."""

    name = models.CharField(max_length=120, unique=True, validators=[note_name])
    display_name = models.CharField(max_length=200, blank=True)
    witness_url = models.URLField(
        blank=True,
        help_text=(
            "The submission prefix of the member's C2SP tlog-witness (the log operator POSTs "
            "to <prefix>/add-checkpoint). Empty: its witness is hosted on this node."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.display_name or self.name


class MemberKey(models.Model):
    """A member's public key, in Go's note verifier format ``name+keyid+base64``."""

    class Purpose(models.TextChoices):
        ANCHOR = "anchor", "signs procedure anchors (Ed25519)"
        COSIGN = "cosign", "cosigns checkpoints (C2SP cosignature/v1)"

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="keys")
    purpose = models.CharField(max_length=10, choices=Purpose.choices)
    verifier_key = models.CharField(max_length=300, unique=True)
    key_id = models.CharField(max_length=8, help_text="The key hash, 8 hex digits.")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["member__name", "purpose", "-created_at"]
        constraints = [
            # Rotation is revoke-then-add: one live key per member and purpose.
            models.UniqueConstraint(
                fields=["member", "purpose"],
                condition=Q(revoked_at__isnull=True),
                name="one_live_key_per_member_purpose",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.member.name} {self.purpose} {self.key_id}"

    def clean(self) -> None:
        """The key must be a Go note verifier key of the right kind, named for its member."""
        try:
            key = note.parse_verifier_key(self.verifier_key)
        except note.NoteError as exc:
            raise ValidationError({"verifier_key": f"not a Go note verifier key: {exc}"}) from exc
        alg = note.ALG_ED25519 if self.purpose == self.Purpose.ANCHOR else note.ALG_COSIGNATURE_V1
        if key.alg != alg:
            raise ValidationError({"verifier_key": f"a {self.purpose} key has algorithm {alg}"})
        if self.member_id and key.name != self.member.name:
            raise ValidationError({"verifier_key": f"the key is named {key.name!r}"})
        self.key_id = f"{key.key_id:08x}"


class Leaf(AppendOnlyModel):
    """One procedure anchor: ``data`` is the exact canonical statement the member signed."""

    index = models.BigIntegerField(primary_key=True)
    leaf_hash = models.BinaryField(max_length=32, unique=True)
    commitment = models.BinaryField(max_length=32, unique=True)
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="leaves")
    data = models.BinaryField()
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["index"]


class TreeNode(AppendOnlyModel):
    """The hash of the complete subtree of ``2**level`` leaves starting at ``index << level``.

    Level 0 is not repeated here: leaf hashes live on :class:`Leaf`. See docs/ledger.md.
    """

    pk = models.CompositePrimaryKey("level", "index")
    level = models.SmallIntegerField()
    index = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)


class Checkpoint(AppendOnlyModel):
    """A signed tree head: ``note`` is the operator-signed C2SP checkpoint note."""

    size = models.BigIntegerField(unique=True)
    root_hash = models.BinaryField(max_length=32)
    note = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-size"]
        get_latest_by = "size"

    def __str__(self) -> str:
        return f"checkpoint {self.size}"


class Cosignature(AppendOnlyModel):
    """A member's C2SP cosignature/v1 on a checkpoint: ``line`` is the note signature line."""

    checkpoint = models.ForeignKey(
        Checkpoint, on_delete=models.PROTECT, related_name="cosignatures"
    )
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="cosignatures")
    key = models.ForeignKey(MemberKey, on_delete=models.PROTECT, related_name="+")
    timestamp = models.BigIntegerField(help_text="Seconds since the epoch, as signed.")
    line = models.TextField()
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["checkpoint", "member__name"]
        constraints = [
            models.UniqueConstraint(fields=["checkpoint", "member"], name="one_cosignature_each"),
        ]


class WitnessState(models.Model):
    """What a witness hosted on this node last cosigned for a log (advanced by compare-and-swap)."""

    witness = models.CharField(max_length=120)
    origin = models.CharField(max_length=255)
    size = models.BigIntegerField()
    root_hash = models.BinaryField(max_length=32)
    note = models.TextField(
        blank=True, help_text="The log-signed checkpoint note it cosigned (blank for old rows)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["witness", "origin"], name="one_state_per_witness_log"),
        ]


class ForkEvidence(AppendOnlyModel):
    """A witness refused a log-signed checkpoint that does not extend what it last cosigned.

    Two checkpoints signed by the same log key that no consistency proof can join are proof that
    the log forked (showed two histories). Recorded by this node's witness (hosted or over HTTP)
    when it refuses one, and by the log operator when a remote witness refuses its checkpoint so.
    One row per witness and conflicting tree: asking again adds nothing.
    """

    class Kind(models.TextChoices):
        BAD_PROOF = "bad_proof", "the consistency proof does not verify (422)"
        SPLIT_VIEW = "split_view", "another tree of the same size was already cosigned (409)"

    class Reporter(models.TextChoices):
        WITNESS = "witness", "this node's witness refused it"
        OPERATOR = "operator", "a remote witness refused this log's checkpoint"

    origin = models.CharField(max_length=255)
    witness = models.CharField(max_length=120, help_text="The witness that refused.")
    reported_by = models.CharField(max_length=10, choices=Reporter.choices)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    cosigned_size = models.BigIntegerField(help_text="The size the witness last cosigned.")
    cosigned_root = models.BinaryField(max_length=32, null=True, blank=True)
    cosigned_note = models.TextField(blank=True, help_text="That checkpoint's note, if known.")
    conflicting_size = models.BigIntegerField()
    conflicting_root = models.BinaryField(max_length=32)
    conflicting_note = models.TextField(help_text="The log-signed checkpoint refused.")
    old_size = models.BigIntegerField(help_text="The old size of the refused request.")
    proof = models.TextField(blank=True, help_text="The consistency proof, base64 lines.")
    detail = models.TextField(blank=True)
    detected_at = models.DateTimeField()

    class Meta:
        ordering = ["-detected_at", "-id"]
        verbose_name_plural = "fork evidence"
        constraints = [
            models.UniqueConstraint(
                fields=["witness", "origin", "conflicting_size", "conflicting_root"],
                name="one_fork_evidence_per_witness_tree",
            ),
        ]

    def __str__(self) -> str:
        return f"fork of {self.origin} at size {self.conflicting_size} ({self.witness})"


class LedgerLock(models.Model):
    """Named rows locked to serialise appends and seals.

    The ``append`` row's ``value`` is the next leaf index on PostgreSQL: bumping it and inserting
    the leaf is one statement, so a failed insert rolls the bump back and indexes never gap.
    """

    name = models.CharField(max_length=20, primary_key=True)
    value = models.BigIntegerField(default=0)
