"""``python -m e2e.cli`` and ``torchrun -m e2e.cli``."""

import sys

from e2e.cli.main import main

sys.exit(main())
