"""``python -m vitnqs``: see :mod:`vitnqs.cli`.

The stop-signal handlers come first, before anything heavy is imported: a SIGTERM at
any moment after this point is recorded, and a run stops at its next safe point with
exit code 75 (:class:`vitnqs.stops.StopSignals`).
"""

import sys

from vitnqs.stops import StopSignals

with StopSignals() as signals:
    from vitnqs.cli import main

    status = main(signals=signals)
sys.exit(status)
