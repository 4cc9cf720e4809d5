"""Named points where a test can stop a process to kill it there (crash-safety tests).

With ``DLR_TEST_PAUSE_AT=<stage>`` in the environment, :func:`pause_point` of that stage prints
``dlr: paused at <stage>`` on stderr and sleeps, so the test can SIGKILL the process at exactly
that point. ``<stage>@<n>`` pauses at the n-th time the point is reached (e.g. the third
checkpoint of a fit). Without the variable it does nothing.
"""

import os
import sys
import time
from collections import Counter

_reached: Counter = Counter()


def pause_point(stage: str) -> None:
    wanted = os.environ.get("DLR_TEST_PAUSE_AT")
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name != stage:
        return
    _reached[stage] += 1
    if _reached[stage] == int(nth or 1):
        print(f"dlr: paused at {stage}", file=sys.stderr, flush=True)
        time.sleep(3600)
