"""``python -m vmpc`` is the ``vmpc`` command."""

import sys

from vmpc.cli import main

sys.exit(main())
