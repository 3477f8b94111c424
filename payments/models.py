"""Payment runs (see payments.services)."""
