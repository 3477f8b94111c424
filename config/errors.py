"""One shape for every API error: ``{"code": <stable slug>, "detail": <sentence>}``.

Services raise :class:`DomainError` subclasses; the DRF exception handler and the plain-Django
handlers below turn them, and DRF's own exceptions, into that shape. Nothing reaches a 500 page
except a real bug.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class DomainError(Exception):
    """A refusal the caller can act on. ``code`` is stable; ``detail`` is for people."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, extra: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.extra = extra or {}


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class Unprocessable(DomainError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "unprocessable"


class TooLarge(DomainError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "too_large"


def error_body(code: str, detail: str, **extra: object) -> dict:
    return {"code": code, "detail": detail, **extra}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.detail, **exc.extra), status=exc.status_code)
    # DRF converts these two Django exceptions only for its own response; convert them here too,
    # so the body below gets DRF's stable code and sentence rather than an empty message.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("invalid", "The request has invalid fields.", fields=exc.detail)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = getattr(detail, "code", None) or "error"
        body = error_body(str(code), str(detail))
    response.data = body
    return response


def _wants_html(request) -> bool:
    """Pages people browse answer errors as pages; the API and C2SP endpoints answer JSON."""
    return not request.path.startswith("/api/") and "text/html" in request.headers.get("Accept", "")


def json_404(request, exception=None) -> HttpResponse:
    if _wants_html(request):
        return render(request, "errors/404.html", status=404)
    return JsonResponse(error_body("not_found", "No such resource."), status=404)


def json_400(request, exception=None) -> JsonResponse:
    return JsonResponse(error_body("bad_request", "The request is malformed."), status=400)


def json_403(request, exception=None) -> HttpResponse:
    if _wants_html(request):
        detail = str(exception) if exception and str(exception) else ""
        return render(request, "errors/403.html", {"detail": detail}, status=403)
    return JsonResponse(error_body("forbidden", "Not allowed."), status=403)


def json_500(request) -> JsonResponse:
    return JsonResponse(error_body("server_error", "Internal error."), status=500)
