"""Named points where a test can stop a process to kill it there (crash-safety tests).

With ``DLR_TEST_PAUSE_AT=<stage>`` in the environment, :func:`pause_point` of that stage prints
``dlr: paused at <stage>`` on stderr and sleeps, so the test can SIGKILL the process at exactly
that point. ``<stage>@<n>`` pauses at the n-th time the point is reached (e.g. the third
checkpoint of a fit). With ``DLR_TEST_RESUME_FILE=<path>`` too, the process goes on once that
file exists (so a test can interleave two processes at named points). Without the variables it
does nothing.
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
        resume = os.environ.get("DLR_TEST_RESUME_FILE")
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline and not (resume and os.path.exists(resume)):
            time.sleep(0.1)
