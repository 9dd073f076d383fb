"""``python -m advlab`` (also what ``torchrun -m advlab`` runs)."""

import sys

from advlab.cli import main

sys.exit(main())
