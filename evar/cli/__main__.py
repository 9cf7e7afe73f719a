"""``python -m evar.cli``: the ``evar`` command."""

import sys

from evar.cli import main

sys.exit(main())
