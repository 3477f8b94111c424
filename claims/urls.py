from django.urls import path

from claims import api, info_api

urlpatterns = [
    path("claims", api.ClaimsApi.as_view(), name="claims"),
    path("claims/<str:public_id>", api.ClaimApi.as_view(), name="claim"),
    path(
        "claims/<str:public_id>/ClaimResponse",
        api.ClaimResponseApi.as_view(),
        name="claim-response",
    ),
    path(
        "claims/<str:public_id>/info-requests",
        info_api.InfoRequestsApi.as_view(),
        name="claim-info-requests",
    ),
    path(
        "claims/<str:public_id>/info-requests/answer",
        info_api.InfoAnswerApi.as_view(),
        name="claim-info-answer",
    ),
    path("providers/<int:provider_id>/keys", api.ProviderKeysApi.as_view(), name="provider-keys"),
    path(
        "providers/<int:provider_id>/keys/<str:kid>/revoke",
        api.ProviderKeyRevokeApi.as_view(),
        name="provider-key-revoke",
    ),
]
