import sys

from claimproof_cli.main import main

sys.exit(main())
