import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# The witness's POST /add-checkpoint is answered in front of Django's middleware and URL
# resolver (ledger/witness_wsgi.py); every other request goes to Django as before.
from ledger.witness_wsgi import WitnessDispatch  # noqa: E402 (needs Django set up)

application = WitnessDispatch(application)

# Load the URLconf (and with it every view, DRF and the FHIR models) now rather than on the
# first request, then leave all of it out of later full collections (config/gc_freeze.py).
from django.urls import get_resolver  # noqa: E402

from config.gc_freeze import freeze_startup_objects  # noqa: E402

get_resolver().url_patterns  # noqa: B018 (imports the URLconf)
freeze_startup_objects()
