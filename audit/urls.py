"""Pages of the audit app."""

app_name = "audit"
urlpatterns: list = []
