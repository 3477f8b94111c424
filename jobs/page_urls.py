"""The jobs pages (browser); the API is jobs/urls.py."""

app_name = "jobs_pages"
urlpatterns: list = []
