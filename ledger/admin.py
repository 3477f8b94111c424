import base64

from django.contrib import admin, messages
from django.utils import timezone

from ledger.models import Checkpoint, Cosignature, ForkEvidence, Leaf, Member, MemberKey


class MemberKeyInline(admin.TabularInline):
    """Shown here; added and revoked on the member key page. Keys are never edited or deleted,
    so that every old signature stays checkable."""

    model = MemberKey
    extra = 0
    fields = ["purpose", "key_id", "verifier_key", "created_at", "revoked_at", "revocation_reason"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "witness_url", "created_at"]
    search_fields = ["name", "display_name"]
    inlines = [MemberKeyInline]


@admin.register(MemberKey)
class MemberKeyAdmin(admin.ModelAdmin):
    list_display = ["member", "purpose", "key_id", "created_at", "revoked_at"]
    list_filter = ["purpose", "revoked_at"]
    search_fields = ["member__name", "key_id", "verifier_key"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["key_id", "created_at", "revoked_at"]
        return ["member", "purpose", "verifier_key", "key_id", "created_at", "revoked_at"]

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected keys now")
    def revoke(self, request, queryset):
        n = queryset.filter(revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revocation_reason="revoked by an operator in the admin"
        )
        self.message_user(request, f"{n} key(s) revoked.", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is append-only: the admin shows it and changes nothing."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Leaf)
class LeafAdmin(ReadOnlyAdmin):
    list_display = ["index", "member", "received_at"]
    list_filter = ["member"]
    list_select_related = ["member"]
    show_full_result_count = False


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["size", "created_at"]


@admin.register(Cosignature)
class CosignatureAdmin(ReadOnlyAdmin):
    list_display = ["checkpoint", "member", "timestamp", "received_at"]
    list_select_related = ["checkpoint", "member"]


def _b64(value) -> str:
    return base64.b64encode(bytes(value)).decode("ascii") if value is not None else "unknown"


@admin.register(ForkEvidence)
class ForkEvidenceAdmin(ReadOnlyAdmin):
    """Evidence that the log forked: kept for ever, shown, never changed."""

    list_display = [
        "detected_at",
        "origin",
        "witness",
        "kind",
        "reported_by",
        "cosigned_size",
        "cosigned_root_b64",
        "conflicting_size",
        "conflicting_root_b64",
    ]
    list_filter = ["kind", "reported_by", "witness"]
    search_fields = ["origin", "witness"]
    fields = [
        "detected_at",
        "origin",
        "witness",
        "reported_by",
        "kind",
        "detail",
        "old_size",
        "cosigned_size",
        "cosigned_root_b64",
        "cosigned_note",
        "conflicting_size",
        "conflicting_root_b64",
        "conflicting_note",
        "proof",
    ]
    readonly_fields = fields

    @admin.display(description="cosigned root (base64)")
    def cosigned_root_b64(self, obj: ForkEvidence) -> str:
        return _b64(obj.cosigned_root)

    @admin.display(description="conflicting root (base64)")
    def conflicting_root_b64(self, obj: ForkEvidence) -> str:
        return _b64(obj.conflicting_root)
