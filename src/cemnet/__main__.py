"""``python -m cemnet`` is the ``cemnet`` command."""

import sys

from cemnet.cli import main

sys.exit(main())
