"""A tiny JSON client over ``urllib.request``: base URL, token, clear errors, timeouts."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from claimproof_cli import REFUSED, UNREACHABLE, CliError, usage

DEFAULT_TIMEOUT_S = 30.0
USER_AGENT = "claimproof-cli/1"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise CliError(f"the server answered {self.status} with something not JSON") from exc

    def text(self) -> str:
        return self.body.decode("utf-8")


@dataclass(frozen=True, slots=True)
class Client:
    base_url: str
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S

    @classmethod
    def make(cls, url: str | None, token: str | None, timeout: float) -> Client:
        if not url:
            raise usage("no server: give --url or set CLAIMPROOF_URL (e.g. http://127.0.0.1:8000)")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise usage(f"--url must be an http(s) URL, not {url!r}")
        return cls(url.rstrip("/"), token or None, timeout)

    def get(self, path: str, **params: object) -> Response:
        if params:
            path += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self.request("GET", path)

    def get_json(self, path: str, **params: object) -> Any:
        return self.get(path, **params).json()

    def post_json(self, path: str, payload: Any, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(payload).encode()
        return self.post(path, body, "application/json", headers)

    def post(
        self,
        path: str,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return self.request("POST", path, body, {"Content-Type": content_type, **(headers or {})})

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> Response:
        url = self.base_url + path
        all_headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
        if auth and self.token:
            all_headers["Authorization"] = f"Token {self.token}"
        request = urllib.request.Request(url, data=body, headers=all_headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                return Response(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as exc:
            raise self._refusal(method, path, exc) from None
        except urllib.error.URLError as exc:
            raise CliError(
                f"cannot reach the server at {self.base_url}: {_reason(exc.reason)}", UNREACHABLE
            ) from None
        except TimeoutError:
            raise CliError(
                f"the server at {self.base_url} did not answer within {self.timeout:g} s",
                UNREACHABLE,
            ) from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise CliError(
                f"the connection to {self.base_url} failed: {_reason(exc)}", UNREACHABLE
            ) from None

    def _refusal(self, method: str, path: str, exc: urllib.error.HTTPError) -> CliError:
        status = exc.code
        try:
            raw = exc.read()
        except OSError:
            raw = b""
        code, detail = _error_of(raw)
        where = f"{method} {path.split('?', 1)[0]}"
        if status >= 500:
            return CliError(
                f"the server failed on {where} (HTTP {status} {code}): {detail}; try again later",
                UNREACHABLE,
                status=status,
                code=code,
                detail=detail,
            )
        hint = ""
        if status == 401:
            hint = " (give --token or set CLAIMPROOF_TOKEN)"
        elif status == 403:
            hint = " (is this token a user of that provider?)"
        return CliError(
            f"refused by the server: {where} answered {status} {code}: {detail}{hint}",
            REFUSED,
            status=status,
            code=code,
            detail=detail,
        )


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is the server running, and is the URL right?)"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    return str(reason) or type(reason).__name__


def _error_of(raw: bytes) -> tuple[str, str]:
    """(code, detail) from ``{"code", "detail"}`` or a FHIR OperationOutcome."""
    try:
        body = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace").strip()
        return "error", (text[:200] or "no detail")
    if not isinstance(body, dict):
        return "error", str(body)[:200]
    if body.get("resourceType") == "OperationOutcome":
        issues = body.get("issue") or []
        sentences = []
        for issue in issues:
            if isinstance(issue, dict):
                where = ", ".join(issue.get("expression") or [])
                text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
                sentences.append(f"{text} ({where})" if where else str(text))
        code = next((i.get("code") for i in issues if isinstance(i, dict)), "invalid")
        return str(code), "; ".join(sentences) or "the FHIR resource was refused"
    detail = str(body.get("detail", "no detail"))
    if fields := body.get("fields"):
        detail += f" {json.dumps(fields)}"
    return str(body.get("code", "error")), detail
