"""Payment runs in the admin: read-only. Runs are started from /jobs/ or ``manage.py
payment_run``; nothing here writes payouts or claims (payments.services does)."""

from django.contrib import admin

from payments.models import PaymentChunk, PaymentRun, PaymentRunItem, PaymentRunTotal


class ReadOnly(admin.ModelAdmin):
    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TotalInline(admin.TabularInline):
    model = PaymentRunTotal
    extra = 0
    can_delete = False
    fields = ["currency", "payouts", "amount", "settled_payouts", "settled_amount"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(PaymentRun)
class PaymentRunAdmin(ReadOnly):
    list_display = [
        "id",
        "period",
        "status",
        "settled",
        "total",
        "errors",
        "created_by",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status"]
    date_hierarchy = "period"
    inlines = [TotalInline]


@admin.register(PaymentChunk)
class PaymentChunkAdmin(ReadOnly):
    list_display = ["run", "number", "first_id", "last_id", "size", "status", "attempts"]
    list_filter = ["status"]


@admin.register(PaymentRunItem)
class PaymentRunItemAdmin(ReadOnly):
    list_display = ["run", "payout", "amount", "currency", "settled_at", "error"]
    list_select_related = ["payout"]
    search_fields = ["payout__reference"]
    raw_id_fields = ["payout", "chunk"]
