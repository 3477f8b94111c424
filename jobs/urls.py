from django.urls import path

from jobs import api

urlpatterns = [
    path("jobs", api.JobsApi.as_view(), name="jobs"),
    path("jobs/<int:job_id>", api.JobApi.as_view(), name="job"),
    path("jobs/<int:job_id>/cancel", api.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<int:job_id>/changes.csv", api.JobChangesCsvApi.as_view(), name="job-changes"),
]
