import base64

from django.contrib import admin, messages
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
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

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if not change:
                audit_record(
                    actor=request.user,
                    action="member_key.add",
                    target=f"member_key:{obj.key_id}",
                    data={"member": obj.member.name, "purpose": obj.purpose},
                )

    @admin.action(description="Revoke the selected keys now")
    def revoke(self, request, queryset):
        reason = "revoked by an operator in the admin"
        with transaction.atomic():
            keys = list(queryset.select_for_update().filter(revoked_at__isnull=True))
            now = timezone.now()
            for key in keys:
                MemberKey.objects.filter(pk=key.pk).update(revoked_at=now, revocation_reason=reason)
                audit_record(
                    actor=request.user,
                    action="member_key.revoke",
                    target=f"member_key:{key.key_id}",
                    why=reason,
                    data={"member": key.member.name, "purpose": key.purpose},
                )
        self.message_user(request, f"{len(keys)} key(s) revoked.", messages.SUCCESS)


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
