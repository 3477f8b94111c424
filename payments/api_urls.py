"""The providers' remittance API (payments.api), under /api/v1/."""

from django.urls import path

from payments import api

urlpatterns = [
    path(
        "payments/reconciliations",
        api.ReconciliationsApi.as_view(),
        name="payment-reconciliations",
    ),
    path(
        "payments/reconciliations/<int:run_id>",
        api.ReconciliationApi.as_view(),
        name="payment-reconciliation",
    ),
]
