"""Operators' REST API for batch jobs: list, start, follow, export the changed verdicts."""

from __future__ import annotations

import csv

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NotFound
from jobs import services
from jobs.models import BatchJob


class JobInput(serializers.Serializer):
    scope = serializers.JSONField(
        help_text='{"all": true}, {"provider": 3}, {"kid": "..."}, '
        '{"since": "...", "until": "..."} or {"checkpoint": 120}'
    )
    reason = serializers.CharField(max_length=300, required=False, default="")


class JobOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    scope = serializers.JSONField()
    reason = serializers.CharField()
    status = serializers.CharField()
    planned = serializers.BooleanField()
    chunks = serializers.IntegerField()
    chunks_done = serializers.IntegerField()
    total = serializers.IntegerField()
    done = serializers.IntegerField()
    passed = serializers.IntegerField()
    failed = serializers.IntegerField()
    changed = serializers.IntegerField()
    waiting = serializers.IntegerField()
    skipped = serializers.IntegerField()
    errors = serializers.IntegerField()
    percent = serializers.FloatField()
    rate_per_s = serializers.FloatField()
    eta_s = serializers.FloatField(allow_null=True)
    elapsed_s = serializers.FloatField()
    started_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    url = serializers.SerializerMethodField()
    changes_csv_url = serializers.SerializerMethodField()

    def get_url(self, p: dict) -> str:
        return f"/api/v1/jobs/{p['id']}"

    def get_changes_csv_url(self, p: dict) -> str:
        return f"/api/v1/jobs/{p['id']}/changes.csv"


def _job(job_id: int) -> BatchJob:
    job = BatchJob.objects.select_related("started_by").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"no job {job_id}", code="unknown_job")
    return job


class JobsApi(APIView):
    """Batch re-verification jobs, newest first (staff only); POST starts one."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses=JobOutput(many=True))
    def get(self, request: Request) -> Response:
        jobs = BatchJob.objects.select_related("started_by")[:100]
        return Response(JobOutput([services.job_progress(j) for j in jobs], many=True).data)

    @extend_schema(request=JobInput, responses={202: JobOutput})
    def post(self, request: Request) -> Response:
        data = JobInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.job_start(
            data.validated_data["scope"], request.user, reason=data.validated_data["reason"]
        )
        body = JobOutput(services.job_progress(job)).data
        return Response(body, status=202, headers={"Location": body["url"]})


class JobApi(APIView):
    """One job's progress: counters, rate and ETA."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses=JobOutput)
    def get(self, request: Request, job_id: int) -> Response:
        return Response(JobOutput(services.job_progress(_job(job_id))).data)


class CancelInput(serializers.Serializer):
    reason = serializers.CharField(max_length=300, required=False, default="")


class JobCancelApi(APIView):
    """Cancel a queued or running job (staff): chunks not started do nothing; 409
    ``job_finished`` when it had already ended."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        request=CancelInput,
        responses={200: JobOutput, 409: OpenApiResponse(description="The job had ended.")},
    )
    def post(self, request: Request, job_id: int) -> Response:
        data = CancelInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.job_cancel(_job(job_id), request.user, reason=data.validated_data["reason"])
        return Response(JobOutput(services.job_progress(job)).data)


class _Echo:
    def write(self, value: str) -> str:
        return value


class JobChangesCsvApi(APIView):
    """The claims whose verdict this job changed, as CSV (streamed)."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request, job_id: int) -> StreamingHttpResponse:
        job = _job(job_id)
        writer = csv.writer(_Echo())
        response = StreamingHttpResponse(
            (writer.writerow(row) for row in services.job_changes_rows(job)),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="job-{job.pk}-changes.csv"'
        return response
