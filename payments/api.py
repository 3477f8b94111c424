"""The providers' remittances: what each payment run paid them, as FHIR R4
PaymentReconciliation (token auth, as the claims API; a provider sees only its own)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from claims.api import AUTHENTICATION, FHIR_JSON, fhir_response, provider_of
from config.errors import Unprocessable
from payments import services


class ReconciliationOutput(serializers.Serializer):
    run = serializers.IntegerField(help_text="the payment run's id")
    period = serializers.DateField(help_text="the UTC day the run paid approvals up to")
    run_status = serializers.CharField(help_text="settled, or failed when some payouts were not")
    paid_at = serializers.DateTimeField(allow_null=True)
    currency = serializers.CharField()
    payouts = serializers.IntegerField(help_text="payouts paid to you in this currency")
    unsettled = serializers.IntegerField(help_text="your payouts the run could not pay")
    amount = serializers.DecimalField(max_digits=16, decimal_places=2)
    outcome = serializers.CharField(help_text="complete, or partial")
    identifier = serializers.CharField(help_text="PaymentReconciliation.identifier")
    url = serializers.SerializerMethodField()

    def get_url(self, row: dict) -> str:
        url = f"/api/v1/payments/reconciliations/{row['run']}"
        return url if not row.get("several") else f"{url}?currency={row['currency']}"


def _int(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Unprocessable(
            f"{name} is a whole number, not {raw[:20]!r}", code="bad_query"
        ) from None
    if value < 1:
        raise Unprocessable(f"{name} is at least 1", code="bad_query")
    return value


class ReconciliationsApi(APIView):
    """Your remittances, newest first: one entry per payment run (and currency) that paid you;
    at most ``limit`` runs (100), ``before`` a run id for the next page."""

    authentication_classes = AUTHENTICATION  # the provider's token, as the claims API
    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter("limit", int, description="runs per page, 1 to 100 (100)"),
            OpenApiParameter("before", int, description="only runs older than this run id"),
        ],
        responses={
            200: ReconciliationOutput(many=True),
            403: OpenApiResponse(description="Not a provider user."),
            422: OpenApiResponse(description="limit or before is not a positive number."),
        },
    )
    def get(self, request: Request) -> Response:
        provider = provider_of(request)
        rows = services.provider_reconciliations(
            provider.pk,
            before=_int(request, "before", None),
            limit=_int(request, "limit", services.LIST_MAX),
        )
        runs: dict[int, int] = {}
        for row in rows:
            runs[row["run"]] = runs.get(row["run"], 0) + 1
        for row in rows:
            row["several"] = runs[row["run"]] > 1
        return Response(ReconciliationOutput(rows, many=True).data)


class ReconciliationApi(APIView):
    """What one payment run paid you, as a FHIR R4 PaymentReconciliation
    (``application/fhir+json``); ``?currency=`` when it paid you in several."""

    authentication_classes = AUTHENTICATION  # the provider's token, as the claims API
    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("currency", str, description="e.g. USD")],
        responses={
            (200, FHIR_JSON): OpenApiTypes.OBJECT,
            404: OpenApiResponse(description="No such run, or it paid you nothing."),
            409: OpenApiResponse(description="The run is not finished yet."),
            422: OpenApiResponse(description="It paid you in several currencies: say which."),
        },
    )
    def get(self, request: Request, run_id: int):
        provider = provider_of(request)
        resource = services.provider_reconciliation(
            run_id, provider.pk, request.query_params.get("currency", "")
        )
        return fhir_response(resource)
