"""The C2SP endpoints, at the node's root (the tlog-tiles and tlog-witness prefixes are the node's
base URL): included by config/urls.py with ``path("", include("ledger.c2sp_urls"))``."""

from django.urls import path, re_path

from ledger import tile_views, witness_views

urlpatterns = [
    path("add-checkpoint", witness_views.add_checkpoint, name="c2sp-add-checkpoint"),
    path("checkpoint", tile_views.checkpoint, name="c2sp-checkpoint"),
    re_path(r"^tile/(?P<path>[0-9a-z./]{1,200})$", tile_views.tile, name="c2sp-tile"),
]
