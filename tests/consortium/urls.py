"""The node's URLs with the C2SP endpoints at the root, for tests (and the node processes they
start) until config/urls.py includes ``ledger.c2sp_urls`` itself."""

from django.urls import include, path

from config import urls as node_urls

urlpatterns = [path("", include("ledger.c2sp_urls")), *node_urls.urlpatterns]

handler400 = node_urls.handler400
handler403 = node_urls.handler403
handler404 = node_urls.handler404
handler500 = node_urls.handler500
