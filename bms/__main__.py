"""``python -m bms`` runs the ``bms`` command."""

import sys

from bms.cli.main import main

sys.exit(main())
