"""The jobs pages (browser); the API is jobs/urls.py."""

from jobs import views

app_name = "jobs_pages"
urlpatterns = views.urls
