"""The production URLs plus ``POST /bench/trivial``: the reference of the intake benchmark, the
same stack (gunicorn, Django middleware, DRF, token authentication, JSON answer) doing nothing."""

from django.urls import path
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.urls import urlpatterns as production


class Trivial(APIView):
    """Authenticates, reads the body, answers 202 with a small JSON object."""

    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        return Response({"received": len(request.body)}, status=202)


urlpatterns = [path("bench/trivial", Trivial.as_view()), *production]
