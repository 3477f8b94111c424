"""Admin for providers and their keys; claims are shown read-only (status moves only through
claims.states.claim_transition)."""

from django.contrib import admin, messages

from claims import services
from claims.models import Claim, ClaimCheck, ClaimEvent, Provider, ProviderKey, ProviderUser


class ProviderKeyInline(admin.TabularInline):
    model = ProviderKey
    extra = 0
    fields = ["kid", "not_before", "not_after", "revoked_at", "revocation_reason"]
    readonly_fields = ["kid"]
    can_delete = False


class ProviderUserInline(admin.TabularInline):
    model = ProviderUser
    extra = 0


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "member", "created_at"]
    search_fields = ["name", "member__name"]
    inlines = [ProviderKeyInline, ProviderUserInline]


@admin.register(ProviderKey)
class ProviderKeyAdmin(admin.ModelAdmin):
    list_display = ["kid", "provider", "not_before", "not_after", "revoked_at"]
    list_filter = ["provider", "revoked_at"]
    search_fields = ["kid", "provider__name"]
    readonly_fields = ["kid", "public_jwk", "created_at"]
    actions = ["revoke_now"]

    def has_delete_permission(self, request, obj=None):
        return False  # old claims stay verifiable: keys are revoked, never deleted

    @admin.action(description="Revoke the selected keys now (signatures before now stay valid)")
    def revoke_now(self, request, queryset):
        n = 0
        for key in queryset.filter(revoked_at__isnull=True):
            services.provider_key_revoke(
                key=key, reason="revoked by an operator in the admin", actor=request.user
            )
            n += 1
        self.message_user(request, f"{n} key(s) revoked.", messages.SUCCESS)


class ClaimCheckInline(admin.TabularInline):
    model = ClaimCheck
    extra = 0
    can_delete = False
    fields = ["run", "name", "outcome", "sentence", "checked_at"]
    readonly_fields = fields


class ClaimEventInline(admin.TabularInline):
    model = ClaimEvent
    extra = 0
    can_delete = False
    fields = ["at", "actor", "old_status", "new_status", "reason"]
    readonly_fields = fields


@admin.register(Claim)
class ClaimAdmin(admin.ModelAdmin):
    list_display = ["public_id", "provider", "status", "verdict", "total", "currency", "created_at"]
    list_filter = ["status", "verdict", "provider"]
    search_fields = ["public_id", "idempotency_key"]
    inlines = [ClaimCheckInline, ClaimEventInline]
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Claim._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
