"""``python -m registry.server`` runs the mlgate CLI."""

import sys

from registry.server.cli import main

sys.exit(main())
