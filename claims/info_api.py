"""The provider's side of an insurer's request for information (docs/workspace.md).

``GET /api/v1/claims/{id}/info-requests`` lists the requests on one of the provider's claims;
``POST /api/v1/claims/{id}/info-requests/answer`` answers the open one with a FHIR
DocumentReference or Binary, which sends the claim back to the adjusters' queue.
"""

from __future__ import annotations

import json

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from claims import selectors
from claims.api import claim_media_type
from config.errors import DomainError, TooLarge, Unprocessable
from review import reasons
from review.models import InfoRequest
from review.services import info_answer


class BadRequest(DomainError):
    code = "bad_json"


class InfoRequestOutput(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    reason_code = serializers.CharField()
    reason = serializers.SerializerMethodField()
    question = serializers.CharField()
    requested_at = serializers.DateTimeField()
    answered = serializers.SerializerMethodField()
    answered_at = serializers.DateTimeField(allow_null=True)
    answer_text = serializers.CharField()
    attachment_type = serializers.SerializerMethodField()

    def get_reason(self, request: InfoRequest) -> str:
        return reasons.INFO_REASONS.get(request.reason_code, request.reason_code)

    def get_answered(self, request: InfoRequest) -> bool:
        return request.answered_at is not None

    def get_attachment_type(self, request: InfoRequest) -> str | None:
        return (request.attachment or {}).get("resourceType")


class InfoRequestsApi(APIView):
    """The insurer's requests for information on one of your claims, oldest first."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=InfoRequestOutput(many=True))
    def get(self, request: Request, public_id: str) -> Response:
        provider = selectors.provider_for_user(request.user)
        claim = selectors.claim_for_provider(provider=provider, public_id=public_id)
        rows = InfoRequest.objects.filter(claim=claim).order_by("requested_at", "pk")
        return Response(InfoRequestOutput(rows, many=True).data)


def _body(request: Request) -> dict:
    """The JSON object sent, within ``CLAIMS_MAX_BYTES``; 413, 415-as-422 or 400 otherwise."""
    limit = settings.CLAIMS_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise TooLarge(f"an answer is at most {limit} bytes", code="too_large")
    if not claim_media_type(request.META):  # the claims endpoint's rule: any case
        raise Unprocessable("send the answer as application/json", code="unsupported_media_type")
    raw = request.body
    if len(raw) > limit:
        raise TooLarge(f"an answer is at most {limit} bytes", code="too_large")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"attachment": {...}, "text": "..."}')
    if "attachment" not in body:
        raise Unprocessable(
            "the answer needs an attachment: a FHIR DocumentReference or Binary",
            code="attachment",
        )
    text = body.get("text", "")
    if not isinstance(text, str):
        raise Unprocessable("text must be a string", code="text")
    return body


class InfoAnswerApi(APIView):
    """Answer the open request with a FHIR DocumentReference or Binary (and a sentence)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            200: InfoRequestOutput,
            400: OpenApiResponse(description="Not a JSON object."),
            404: OpenApiResponse(description="Not one of your claims."),
            409: OpenApiResponse(description="No open request for information."),
            413: OpenApiResponse(description="Larger than CLAIMS_MAX_BYTES."),
            422: OpenApiResponse(description="Not a valid FHIR DocumentReference or Binary."),
        },
    )
    def post(self, request: Request, public_id: str) -> Response:
        provider = selectors.provider_for_user(request.user)
        claim = selectors.claim_for_provider(provider=provider, public_id=public_id)
        body = _body(request)
        answered = info_answer(
            claim_id=claim.pk,
            user=request.user,
            attachment=body["attachment"],
            text=body.get("text", ""),
        )
        return Response(InfoRequestOutput(answered).data)
