"""Placeholder: routes come in the next commit."""

from django.urls import path

from review.roles import Ability, requires


@requires(Ability.DASHBOARD)
def dashboard(request):
    from django.shortcuts import render

    return render(request, "review/dashboard.html", {})


urls = [path("", dashboard, name="dashboard")]
