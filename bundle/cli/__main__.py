"""``python -m bundle.cli``: the same as the ``bundle`` command."""

import sys

from . import main

sys.exit(main())
