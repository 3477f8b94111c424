"""Batch jobs in the admin: read-only progress, and a cancel action."""

from django.contrib import admin, messages

from config.errors import Conflict
from jobs import services
from jobs.models import BatchChunk, BatchJob


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "scope",
        "status",
        "done",
        "total",
        "passed",
        "failed",
        "changed",
        "started_by",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "kind"]
    actions = ["cancel"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in BatchJob._meta.fields]

    def has_add_permission(self, request):
        return False  # started from the API, the command, beat or a key revocation

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request, queryset):
        n = 0
        for job in queryset:
            try:
                services.job_cancel(job)
                n += 1
            except Conflict:
                pass
        self.message_user(request, f"{n} job(s) cancelled.", messages.SUCCESS)


@admin.register(BatchChunk)
class BatchChunkAdmin(admin.ModelAdmin):
    list_display = ["job", "number", "first_id", "last_id", "status", "done", "attempts"]
    list_filter = ["status"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in BatchChunk._meta.fields]

    def has_add_permission(self, request):
        return False
