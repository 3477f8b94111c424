from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.errors import json_400, json_403, json_404, json_500

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("ledger.api_urls")),
    path("api/v1/", include("claims.urls")),
    path("api/v1/", include("jobs.urls")),
    path("api/v1/", include("payments.api_urls")),
    path("", include("ledger.c2sp_urls")),  # C2SP tlog-witness and tlog-tiles at the root
    path("api/v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("ledger/", include("ledger.urls")),
    path("audit/", include("audit.urls")),
    path("jobs/", include("jobs.page_urls")),
    path("payments/", include("payments.urls")),
    path("", include("review.urls")),
]

handler400 = json_400
handler403 = json_403
handler404 = json_404
handler500 = json_500
