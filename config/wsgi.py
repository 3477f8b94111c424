import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# The witness's POST /add-checkpoint is answered in front of Django's middleware and URL
# resolver (ledger/witness_wsgi.py); every other request goes to Django as before.
from ledger.witness_wsgi import WitnessDispatch  # noqa: E402 (needs Django set up)

application = WitnessDispatch(application)
