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

from config.errors import NotFound, TooLarge, Unprocessable
from ledger import proofs, selectors, services
from ledger.models import Leaf

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
    member = serializers.CharField(source="member.name")
    data = serializers.SerializerMethodField(help_text="The anchor statement, as anchored.")
    received_at = serializers.DateTimeField()
    sealed = serializers.SerializerMethodField(help_text="In a signed checkpoint yet?")

    def get_leaf_hash(self, leaf: Leaf) -> str:
        return b64(bytes(leaf.leaf_hash))

    def get_data(self, leaf: Leaf) -> str:
        return bytes(leaf.data).decode("utf-8")

    def get_sealed(self, leaf: Leaf) -> bool:
        return leaf.index < self.context["sealed_size"]


class AnchorsApi(APIView):
    """Append a member's signed procedure anchor (docs/ledger-format.md)."""

    authentication_classes: list = []  # the member's signature is the authentication

    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            201: LeafOutput,
            200: OpenApiResponse(LeafOutput, description="Already anchored: the same leaf."),
            409: OpenApiResponse(description="The commitment is anchored by another statement."),
            413: OpenApiResponse(description="Larger than LEDGER_ANCHOR_MAX_BYTES."),
            422: OpenApiResponse(description="Malformed, unknown member or key, bad signature."),
        },
    )
    def post(self, request: Request) -> Response:
        limit = settings.LEDGER_ANCHOR_MAX_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise TooLarge(f"an anchor statement is at most {limit} bytes", code="anchor_too_large")
        content_type = request.content_type.split(";")[0].strip()
        if content_type != "application/json":
            raise Unprocessable(
                "send the statement as application/json", code="unsupported_media_type"
            )
        result = services.anchor_append(data=request.body)
        body = LeafOutput(result.leaf, context={"sealed_size": services.sealed_size()}).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else 200)


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
        sealed = services.sealed_size()
        size = q.get("tree_size", sealed)
        leaf_hash = q.get("leaf_hash") or selectors.leaf_hash_at(index)
        reader = proofs.HashReader()
        try:
            path = proofs.inclusion(index, size, sealed_size=sealed, reader=reader)
            root = proofs.root_at(size, sealed_size=sealed, reader=reader)
        except proofs.SizeError as exc:
            raise Unprocessable(str(exc), code="bad_size") from exc
        return Response(
            {
                "leaf_index": index,
                "tree_size": size,
                "leaf_hash": b64(leaf_hash),
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
        sealed = services.sealed_size()
        old_size = query.validated_data["old_size"]
        new_size = query.validated_data.get("new_size", sealed)
        reader = proofs.HashReader()
        try:
            path = proofs.consistency(old_size, new_size, sealed_size=sealed, reader=reader)
            old_root = proofs.root_at(old_size, sealed_size=sealed, reader=reader)
            new_root = proofs.root_at(new_size, sealed_size=sealed, reader=reader)
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
        leaf = selectors.leaf_get(index)
        return Response(LeafOutput(leaf, context={"sealed_size": services.sealed_size()}).data)
