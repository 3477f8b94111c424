"""The adjuster workspace. Each page module lists its own routes in ``urls``."""

from review import views_claim, views_dashboard, views_queue

app_name = "review"
urlpatterns = [*views_dashboard.urls, *views_queue.urls, *views_claim.urls]
