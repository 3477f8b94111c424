"""Pages of the payments app (payments.views)."""

from payments import views

app_name = "payments"
urlpatterns = views.urls
