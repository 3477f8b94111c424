"""The providers' REST API: submit claims, follow them, read the ClaimResponse, manage keys."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from types import SimpleNamespace

from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from claims import selectors, services
from claims.auth import (
    GUARD_ATTR,
    PROVIDER_ATTR,
    IntakeTokenAuthentication,
    ProviderTokenAuthentication,
    confirm,
    remembered_guard,
    token_key,
)
from claims.claim_response import claim_response
from claims.models import Claim, Provider
from config.errors import TooLarge, Unprocessable

FHIR_JSON = "application/fhir+json"
_DECIMAL = re.compile(r'"\\u0000dec:([-0-9.eE+]+)"')


def fhir_response(resource: dict, status: int = 200) -> HttpResponse:
    """FHIR JSON with decimals written exactly as stored (``105.00`` stays ``105.00``)."""

    def exact(value):
        if isinstance(value, Decimal):
            return f"\0dec:{value}"
        raise TypeError(f"{type(value).__name__} is not JSON")

    text = _DECIMAL.sub(r"\1", json.dumps(resource, default=exact, ensure_ascii=False))
    return HttpResponse(text.encode(), status=status, content_type=FHIR_JSON)


class CheckOutput(serializers.Serializer):
    name = serializers.CharField()
    outcome = serializers.CharField()
    sentence = serializers.CharField()
    evidence = serializers.JSONField()
    checked_at = serializers.DateTimeField()


class ItemOutput(serializers.Serializer):
    sequence = serializers.IntegerField()
    product_code = serializers.CharField()
    submitted = serializers.DecimalField(max_digits=14, decimal_places=2)
    eligible = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    benefit = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    adjudication = serializers.CharField()
    reason_code = serializers.CharField()


class EventOutput(serializers.Serializer):
    at = serializers.DateTimeField()
    actor = serializers.CharField(source="actor.username", default=None)
    old_status = serializers.CharField()
    new_status = serializers.CharField()
    reason = serializers.CharField()
    snapshot = serializers.JSONField()


class ClaimOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    status = serializers.CharField()
    verdict = serializers.CharField()
    use = serializers.CharField()
    total = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    currency = serializers.CharField()
    kid = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    url = serializers.SerializerMethodField()
    claim_response_url = serializers.SerializerMethodField()
    items = ItemOutput(many=True, source="items.all")
    checks = serializers.SerializerMethodField()
    history = EventOutput(many=True, source="events.all", help_text="Every step, who and why.")

    def get_url(self, claim: Claim) -> str:
        return f"/api/v1/claims/{claim.public_id}"

    def get_claim_response_url(self, claim: Claim) -> str:
        return f"/api/v1/claims/{claim.public_id}/ClaimResponse"

    def get_checks(self, claim: Claim) -> list[dict]:
        return CheckOutput(selectors.claim_latest_checks(claim), many=True).data


# The providers' API authenticates a token with its user's provider in one query (claims/auth.py).
AUTHENTICATION = [ProviderTokenAuthentication, SessionAuthentication]
_UNREAD = object()


def provider_of(request: Request) -> Provider:
    """The provider of the request's user: as the token's query read it (this request), or read
    now for a user authenticated otherwise (a session)."""
    provider = getattr(request.user, PROVIDER_ATTR, _UNREAD)
    if provider is _UNREAD:
        return selectors.provider_for_user(request.user)
    if provider is None:
        raise PermissionDenied("this API is for provider users; this user is bound to no provider")
    return provider


def _when(value) -> str:
    """A time as DRF's DateTimeField writes it (ISO 8601 in UTC, ``Z``)."""
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _money(value: Decimal | None) -> str | None:
    """An amount as ``DecimalField(max_digits=14, decimal_places=2)`` writes it."""
    return None if value is None else format(value.quantize(Decimal("0.01")), "f")


def accepted_body(received: services.Received) -> dict:
    """A claim just received, exactly as :class:`ClaimOutput` writes it (a test compares them),
    built from the rows intake wrote: no serializer, no model instance on the request path."""
    claim, event = received.claim, received.event
    url = f"/api/v1/claims/{claim['public_id']}"
    return {
        "id": str(claim["public_id"]),
        "status": claim["status"],
        "verdict": claim["verdict"],
        "use": claim["use"],
        "total": _money(claim["total"]),
        "currency": claim["currency"],
        "kid": claim["kid"],
        "created_at": _when(claim["created_at"]),
        "updated_at": _when(claim["updated_at"]),
        "url": url,
        "claim_response_url": f"{url}/ClaimResponse",
        "items": [
            {
                "sequence": item["sequence"],
                "product_code": item["product_code"],
                "submitted": _money(item["submitted"]),
                "eligible": _money(item["eligible"]),
                "benefit": _money(item["benefit"]),
                "adjudication": item["adjudication"],
                "reason_code": item["reason_code"],
            }
            for item in received.items
        ],
        "checks": [],  # no verification has run yet
        "history": [
            {
                "at": _when(event["at"]),
                "actor": received.actor_name if event["actor_id"] else None,
                "old_status": event["old_status"],
                "new_status": event["new_status"],
                "reason": event["reason"],
                "snapshot": event["snapshot"],
            }
        ],
    }


def claim_media_type(meta: dict) -> bool:
    """Whether the Content-Type is one a claim is sent as, parameters aside and in any case (RFC
    9110 8.3.1): one rule for the view and the lean path, which would otherwise disagree (DRF's
    ``content_type`` is the header as sent, Django's is lower-cased)."""
    media_type = meta.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    return media_type in (FHIR_JSON, "application/json")


def _json(body: dict, status: int, **headers: str) -> HttpResponse:
    """JSON as DRF's JSONRenderer writes it, without content negotiation or a renderer."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return HttpResponse(
        text.encode(), status=status, content_type="application/json", headers=headers
    )


class ClaimsApi(APIView):
    """Submit a signed claim Bundle (docs/claim-format.md); list your claims."""

    # POST: a token read in the last minute is checked again by the claim's INSERT (claims/auth.py)
    authentication_classes = [IntakeTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request={FHIR_JSON: OpenApiTypes.OBJECT, "application/json": OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, True)],
        responses={
            202: ClaimOutput,
            400: OpenApiResponse(description="Not JSON."),
            409: OpenApiResponse(description="Idempotency-Key reused with another body."),
            413: OpenApiResponse(description="Larger than CLAIMS_MAX_BYTES."),
            422: OpenApiResponse(description="A FHIR OperationOutcome, or a JSON error."),
        },
    )
    def post(self, request: Request) -> HttpResponse:
        provider = provider_of(request)
        guard = getattr(request.user, GUARD_ATTR, None)
        try:
            submission = self._submit(request, provider, guard)
        except Exception:
            if guard is not None:
                confirm(guard)  # a token no longer good is answered as such first
            raise
        if isinstance(submission, HttpResponse):  # the FHIR refusal, an OperationOutcome
            if guard is not None:
                confirm(guard)
            return submission
        if submission.created:
            body = accepted_body(submission.received)
        else:  # an earlier claim, as it stands now
            if guard is not None:
                confirm(guard)
            body = ClaimOutput(submission.claim).data
        return _json(body, 202, Location=body["url"])

    def _submit(
        self, request: Request, provider: Provider, guard
    ) -> services.Submission | HttpResponse:
        limit = settings.CLAIMS_MAX_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise TooLarge(f"a claim is at most {limit} bytes", code="too_large")
        if not claim_media_type(request.META):
            raise Unprocessable(f"send the Bundle as {FHIR_JSON}", code="unsupported_media_type")
        try:
            return services.claim_submit(
                provider=provider,
                user=request.user,
                body=request.body,
                idempotency_key=request.headers.get("Idempotency-Key", ""),
                guard=guard,
            )
        except services.FhirRefusal as exc:
            return fhir_response(exc.outcome, status=422)

    @extend_schema(responses=ClaimOutput(many=True))
    def get(self, request: Request) -> Response:
        provider = provider_of(request)
        claims = selectors.claims_for_provider(provider)[:100]
        return Response(ClaimOutput(claims, many=True).data)


# --- POST /api/v1/claims, lean --------------------------------------------------------------

CLAIMS_PATH = "/api/v1/claims"


class IntakeMiddleware:
    """``POST /api/v1/claims`` answered in front of the rest of the middleware and DRF when the
    answer is a new claim (the hot path: a provider's EHR posting claims).

    It takes a request only when its token is one this process remembers (``claims.auth``:
    the claim's INSERT checks it again), the URL resolves to :class:`ClaimsApi`, the host is
    allowed and DRF's content negotiation would accept it; it then runs the same service
    (``services.claim_receive``) and answers the same 202, with the headers DRF and the
    middleware after this one would add (``Allow``, ``Vary``, ``X-Frame-Options``,
    ``Content-Length``). Any other answer (a refusal, an earlier claim, a token no longer good, a
    value the database cannot hold) wrote nothing, and the request goes on through the full
    stack (the view answers it as before, reading the body again). Every other request goes
    through untouched. Listed in ``MIDDLEWARE`` after the security and static-file middleware,
    which still see every request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        listed = list(settings.MIDDLEWARE)
        me = f"{__name__}.{type(self).__name__}"
        after = listed[listed.index(me) + 1 :] if me in listed else listed
        # Only in front of middleware known to do nothing else to this request and its 202:
        # another one listed after it (or a redirect CommonMiddleware would make) turns it off.
        self.enabled = (
            set(after) <= _SKIPPABLE
            and not getattr(settings, "PREPEND_WWW", False)
            and not getattr(settings, "DISALLOWED_USER_AGENTS", ())
        )
        self.headers = _added_headers(
            "django.middleware.clickjacking.XFrameOptionsMiddleware" in after
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.enabled and request.method == "POST" and request.path_info == CLAIMS_PATH:
            response = _lean_intake(request, self.headers)
            if response is not None:
                return response
        return self.get_response(request)


# What the middleware after IntakeMiddleware does to a token-authenticated POST and its 202:
# sessions, CSRF, auth and messages stay unread and add nothing; CommonMiddleware adds
# Content-Length; XFrameOptionsMiddleware adds X-Frame-Options; htmx only reads headers.
_SKIPPABLE = frozenset(
    {
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django_htmx.middleware.HtmxMiddleware",
    }
)


def _lean_intake(request: HttpRequest, headers: tuple[tuple[str, str], ...]) -> HttpResponse | None:
    """The 202 of a new claim, or None when the full stack must answer (nothing written)."""
    meta = request.META
    guard = remembered_guard(token_key(request))
    if guard is None or meta.get("QUERY_STRING") or not _routed_here(request):
        return None
    if not _acceptable(meta.get("HTTP_ACCEPT")):
        return None  # DRF answers 406
    try:
        request.get_host()
        declared = int(meta.get("CONTENT_LENGTH") or 0)
    except (DisallowedHost, ValueError):
        return None
    if declared > settings.CLAIMS_MAX_BYTES:
        return None
    if not claim_media_type(meta):
        return None
    try:
        body = request.body
    except RequestDataTooBig:
        return None
    received = services.claim_receive(
        guard=guard, body=body, idempotency_key=meta.get("HTTP_IDEMPOTENCY_KEY", "")
    )
    if received is None:
        return None
    answer = accepted_body(received)
    response = _json(answer, 202, Location=answer["url"])
    for name, value in headers:
        response[name] = value
    response["Content-Length"] = str(len(response.content))
    return response


def _routed_here(request: HttpRequest) -> bool:
    urlconf = getattr(request, "urlconf", None) or settings.ROOT_URLCONF
    routed = _routes.get(urlconf)
    if routed is None:
        try:
            match = resolve(CLAIMS_PATH, urlconf)
        except Resolver404:
            routed = False
        else:
            routed = getattr(match.func, "view_class", None) is ClaimsApi
        _routes[urlconf] = routed
    return routed


_routes: dict[str, bool] = {}


@lru_cache(maxsize=64)
def _acceptable(accept: str | None) -> bool:
    """Whether DRF's content negotiation for :class:`ClaimsApi` accepts this Accept header."""
    view = ClaimsApi()
    request = SimpleNamespace(query_params={}, headers={} if accept is None else {"accept": accept})
    try:
        view.get_content_negotiator().select_renderer(request, view.get_renderers())
    except Exception:  # NotAcceptable, or anything odd: the full stack answers it
        return False
    return True


def _added_headers(x_frame_options: bool) -> tuple[tuple[str, str], ...]:
    """What DRF (``Allow``, ``Vary``) and XFrameOptionsMiddleware add to the view's 202."""
    view = ClaimsApi()
    view.head = view.get  # as View.setup() does for every request
    headers = dict(view.default_response_headers)
    if x_frame_options:
        headers["X-Frame-Options"] = getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()
    return tuple(headers.items())


class ClaimApi(APIView):
    """A claim's status, verdict and every check of its latest verification."""

    authentication_classes = AUTHENTICATION
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=ClaimOutput)
    def get(self, request: Request, public_id: str) -> Response:
        provider = provider_of(request)
        claim = selectors.claim_for_provider(provider=provider, public_id=public_id)
        return Response(ClaimOutput(claim).data)


class ClaimResponseApi(APIView):
    """The insurer's answer as a FHIR R4 ClaimResponse (``application/fhir+json``)."""

    authentication_classes = AUTHENTICATION
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={(200, FHIR_JSON): OpenApiTypes.OBJECT})
    def get(self, request: Request, public_id: str) -> HttpResponse:
        provider = provider_of(request)
        claim = selectors.claim_for_provider(provider=provider, public_id=public_id)
        return fhir_response(claim_response(claim))


class KeyOutput(serializers.Serializer):
    kid = serializers.CharField()
    public_jwk = serializers.JSONField()
    not_before = serializers.DateTimeField()
    not_after = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    revocation_reason = serializers.CharField()


class KeyInput(serializers.Serializer):
    public_jwk = serializers.JSONField()
    not_before = serializers.DateTimeField(required=False)
    not_after = serializers.DateTimeField(required=False, allow_null=True)


class RevokeInput(serializers.Serializer):
    reason = serializers.CharField(max_length=200)
    at = serializers.DateTimeField(required=False)


class ProviderKeysApi(APIView):
    """A provider's signing keys (public JWKs): list and register. Your own provider only."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=KeyOutput(many=True))
    def get(self, request: Request, provider_id: int) -> Response:
        provider = selectors.own_provider(request.user, provider_id)
        return Response(KeyOutput(provider.keys.all(), many=True).data)

    @extend_schema(request=KeyInput, responses={201: KeyOutput, 200: KeyOutput})
    def post(self, request: Request, provider_id: int) -> Response:
        provider = selectors.own_provider(request.user, provider_id)
        data = KeyInput(data=request.data)
        data.is_valid(raise_exception=True)
        if not isinstance(data.validated_data["public_jwk"], dict):
            raise Unprocessable("public_jwk must be a JSON object (a JWK)", code="bad_jwk")
        key, created = services.provider_key_register(
            provider=provider, actor=request.user, **data.validated_data
        )
        return Response(KeyOutput(key).data, status=201 if created else 200)


class ProviderKeyRevokeApi(APIView):
    """Revoke a key: signatures on claims received before the revocation time stay valid."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=RevokeInput, responses=KeyOutput)
    def post(self, request: Request, provider_id: int, kid: str) -> Response:
        provider = selectors.own_provider(request.user, provider_id)
        key = selectors.provider_key(provider, kid)
        data = RevokeInput(data=request.data)
        data.is_valid(raise_exception=True)
        key = services.provider_key_revoke(key=key, actor=request.user, **data.validated_data)
        return Response(KeyOutput(key).data)
