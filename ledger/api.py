"""The ledger's REST API (``/api/v1/``): anchoring, the latest checkpoint, proofs and leaves."""

from __future__ import annotations

import base64
import binascii

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import DomainError, NotFound, TooLarge, Unprocessable
from ledger import proofs, selectors, services

MAX_SIZE = 2**63 - 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_hash(value: str) -> bytes:
    """A 32-byte hash given as 64 hex digits or as standard / URL-safe base64."""
    value = value.strip()
    try:
        if len(value) == 64:
            return bytes.fromhex(value)
        raw = base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise serializers.ValidationError("a leaf hash is 32 bytes: 64 hex digits or base64")
    return raw


class SizeField(serializers.IntegerField):
    def __init__(self, **kwargs):
        super().__init__(min_value=0, max_value=MAX_SIZE, **kwargs)


class LeafOutput(serializers.Serializer):
    index = serializers.IntegerField()
    leaf_hash = serializers.SerializerMethodField()
    member = serializers.CharField()
    data = serializers.SerializerMethodField(help_text="The anchor statement, as anchored.")
    received_at = serializers.DateTimeField()
    sealed = serializers.SerializerMethodField(help_text="In a signed checkpoint yet?")

    def get_leaf_hash(self, leaf: services.AnchoredLeaf) -> str:
        return b64(leaf.leaf_hash)

    def get_data(self, leaf: services.AnchoredLeaf) -> str:
        return leaf.data.decode("utf-8")

    def get_sealed(self, leaf: services.AnchoredLeaf) -> bool:
        return leaf.index < self.context["sealed_size"]


class AnchorsApi(APIView):
    """Append signed procedure anchors (docs/ledger-format.md).

    ``application/json``: one statement; 201 with its leaf, 200 if it was already anchored.
    ``application/x-ndjson``: up to ``LEDGER_ANCHOR_BATCH_MAX`` statements, one per line, appended
    in one transaction; 200 with one result per line (each with its own status), so one bad line
    refuses only itself.
    """

    authentication_classes: list = []  # the member's signature is the authentication

    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT, "application/x-ndjson": str},
        responses={
            201: LeafOutput,
            200: OpenApiResponse(
                LeafOutput, description="Already anchored (one statement), or a batch's results."
            ),
            409: OpenApiResponse(description="The commitment is anchored by another statement."),
            413: OpenApiResponse(description="Larger than LEDGER_ANCHOR_MAX_BYTES."),
            422: OpenApiResponse(description="Malformed, unknown member or key, bad signature."),
        },
    )
    def post(self, request: Request) -> Response:
        content_type = request.content_type.split(";")[0].strip()
        if content_type == "application/x-ndjson":
            return self._batch(request)
        if content_type != "application/json":
            raise Unprocessable(
                "send one statement as application/json, or many as application/x-ndjson",
                code="unsupported_media_type",
            )
        _limit_body(request, settings.LEDGER_ANCHOR_MAX_BYTES, "an anchor statement")
        result = services.anchor_append(data=request.body)
        sealed = services.sealed_size() if not result.created else 0
        body = LeafOutput(result.leaf, context={"sealed_size": sealed}).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else 200)

    def _batch(self, request: Request) -> Response:
        most = settings.LEDGER_ANCHOR_BATCH_MAX
        _limit_body(request, most * (settings.LEDGER_ANCHOR_MAX_BYTES + 1), "a batch")
        # Results carry the physical line number; a CRLF line ending is a line ending.
        numbered = [
            (number, line.removesuffix(b"\r"))
            for number, line in enumerate(request.body.split(b"\n"), start=1)
            if line.strip()
        ]
        if not numbered:
            raise Unprocessable("the batch has no statement", code="empty_batch")
        if len(numbered) > most:
            raise TooLarge(f"a batch has at most {most} statements", code="batch_too_large")
        results = services.anchor_append_many(datas=[line for _, line in numbered])
        sealed = services.sealed_size()
        out = []
        for (line, _), result in zip(numbered, results, strict=True):
            if isinstance(result, DomainError):
                out.append(
                    {
                        "line": line,
                        "status": result.status_code,
                        "code": result.code,
                        "detail": result.detail,
                        **result.extra,
                    }
                )
            else:
                leaf = LeafOutput(result.leaf, context={"sealed_size": sealed}).data
                out.append({"line": line, "status": 201 if result.created else 200, **leaf})
        return Response({"results": out})


def _limit_body(request: Request, limit: int, what: str) -> None:
    """413 before reading a body that says it is too large, and after reading one that was."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise TooLarge(f"{what} is at most {limit} bytes", code="anchor_too_large")


class CheckpointApi(APIView):
    """The latest checkpoint: the signed note and every cosignature, as C2SP writes it."""

    @extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request: Request) -> HttpResponse:
        checkpoint = services.checkpoint_latest()
        if checkpoint is None:
            raise NotFound("the log has no checkpoint yet", code="no_checkpoint")
        response = HttpResponse(
            services.checkpoint_text(checkpoint), content_type="text/plain; charset=utf-8"
        )
        response["Cache-Control"] = "no-cache"
        return response


class InclusionQuery(serializers.Serializer):
    index = SizeField(required=False)
    leaf_hash = serializers.CharField(required=False, max_length=100)
    tree_size = SizeField(required=False, help_text="Default: the latest checkpoint's size.")

    def validate_leaf_hash(self, value: str) -> bytes:
        return decode_hash(value)

    def validate(self, attrs: dict) -> dict:
        if ("index" in attrs) == ("leaf_hash" in attrs):
            raise serializers.ValidationError("give exactly one of index and leaf_hash")
        return attrs


class InclusionProofApi(APIView):
    """Inclusion proof (RFC 9162 2.1.3) of a leaf, by index or leaf hash, in a tree size."""

    @extend_schema(parameters=[InclusionQuery], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        query = InclusionQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        if "leaf_hash" in q:
            index = selectors.leaf_index_by_hash(q["leaf_hash"])
        else:
            index = q["index"]
        if "tree_size" not in q and (fast := proofs.served_latest_inclusion(index)):
            size, leaf_hash, path, root = fast  # from the tile cache, checked against the root
            return Response(
                {
                    "leaf_index": index,
                    "tree_size": size,
                    "leaf_hash": b64(leaf_hash),
                    "root_hash": b64(root),
                    "hashes": [b64(h) for h in path],
                }
            )
        # One round trip: the latest checkpoint, the one of tree_size, the leaf's stored hash.
        sizes = [q["tree_size"]] if "tree_size" in q else []
        signed = proofs.signed_roots(sizes, leaf_index=index)
        if signed.leaf_hash is None:
            raise NotFound(f"the log has no leaf {index}", code="unknown_leaf")
        size = q.get("tree_size", signed.sealed_size)
        try:
            path, root = proofs.served_inclusion(index, size, signed)
        except proofs.SizeError as exc:
            raise Unprocessable(str(exc), code="bad_size") from exc
        return Response(
            {
                "leaf_index": index,
                "tree_size": size,
                "leaf_hash": b64(signed.leaf_hash),
                "root_hash": b64(root),
                "hashes": [b64(h) for h in path],
            }
        )


class ConsistencyQuery(serializers.Serializer):
    old_size = SizeField()
    new_size = SizeField(required=False, help_text="Default: the latest checkpoint's size.")


class ConsistencyProofApi(APIView):
    """Consistency proof (RFC 9162 2.1.4) between two tree sizes."""

    @extend_schema(parameters=[ConsistencyQuery], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        query = ConsistencyQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        old_size = query.validated_data["old_size"]
        new_size = query.validated_data.get("new_size")
        signed = proofs.signed_roots([old_size] if new_size is None else [old_size, new_size])
        new_size = signed.sealed_size if new_size is None else new_size
        try:
            path, old_root, new_root = proofs.served_consistency(old_size, new_size, signed)
        except proofs.SizeError as exc:
            raise Unprocessable(str(exc), code="bad_size") from exc
        return Response(
            {
                "old_size": old_size,
                "new_size": new_size,
                "old_root_hash": b64(old_root),
                "new_root_hash": b64(new_root),
                "hashes": [b64(h) for h in path],
            }
        )


class LeafApi(APIView):
    """One leaf of the log, with the statement that was anchored."""

    @extend_schema(
        parameters=[OpenApiParameter("index", int, OpenApiParameter.PATH)],
        responses=LeafOutput,
    )
    def get(self, request: Request, index: int) -> Response:
        leaf = services.AnchoredLeaf.of(selectors.leaf_get(index))
        return Response(LeafOutput(leaf, context={"sealed_size": services.sealed_size()}).data)
