from django.urls import path

from ledger import api

urlpatterns = [
    path("anchors", api.AnchorsApi.as_view(), name="anchors"),
    path("ledger/checkpoint", api.CheckpointApi.as_view(), name="ledger-checkpoint"),
    path("ledger/proofs/inclusion", api.InclusionProofApi.as_view(), name="ledger-inclusion"),
    path("ledger/proofs/consistency", api.ConsistencyProofApi.as_view(), name="ledger-consistency"),
    path("ledger/leaves/<int:index>", api.LeafApi.as_view(), name="ledger-leaf"),
]
