"""``python -m gates.server`` runs the mlgate CLI."""

import sys

from gates.server.cli import main

sys.exit(main())
