"""``python -m vitnqs``: see :mod:`vitnqs.cli`."""

import sys

from vitnqs.cli import main

sys.exit(main())
