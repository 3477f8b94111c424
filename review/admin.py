from django.contrib import admin

from review.models import Approval, Hold, InfoRequest, Payout


class ReadOnlyAdmin(admin.ModelAdmin):
    """Decisions are made in the workspace, where they are checked and audited; the admin only
    shows them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Payout)
class PayoutAdmin(ReadOnlyAdmin):
    list_display = ["reference", "payee", "amount", "currency", "created_at", "settled_at"]
    list_filter = ["currency", "settled_at"]
    search_fields = ["reference", "claim__public_id"]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ["claim", "round", "user", "senior", "at"]


@admin.register(InfoRequest)
class InfoRequestAdmin(ReadOnlyAdmin):
    list_display = ["claim", "reason_code", "requested_by", "requested_at", "answered_at"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["claim", "user", "since"]
