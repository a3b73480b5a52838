"""A test-only hook to stop the server exactly between two writes.

With `ALIGND_TEST_CRASH_AT=<step>` in its environment, the process SIGKILLs itself when it reaches
that step, as a power cut or an OOM kill would; the fault tests (`tests/faults/test_crash_points.py`)
use it to show that every step of an upload or a delete leaves something the sweeper can finish.
Unset (always, outside those tests) it does nothing. The steps:

- `upload.stored`: the upload's object is in the store, its row not yet written;
- `delete.marked`: the file's row is marked deleting, its object still in the store;
- `delete.object_removed`: the object is gone, the row (marked deleting) not yet.
"""

import os
import signal

ENV = "ALIGND_TEST_CRASH_AT"


def reached(step: str) -> None:
    if os.environ.get(ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
