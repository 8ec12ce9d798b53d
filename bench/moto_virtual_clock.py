"""moto_server whose Step Functions Wait states take no real time.

Each Wait adds its seconds to a virtual clock kept in the file named by
$BACKSTOP_VIRTUAL_CLOCK (whole seconds, created at 0) and returns at once, so an execution
whose polls wait half an hour runs in seconds and its history is the one a real half hour
would leave. Everything else is moto_server unchanged. Used by `make bench` (the state
transitions figure) through bench/moto-virtual-clock; one execution at a time, one Map
iteration at a time (parallel waits would add up).
"""

import os
import sys
import threading

from moto.stepfunctions.parser.asl.component.state.wait.wait_function import wait_function

_LOCK = threading.Lock()


def _advance(self, env, wait_seconds):  # noqa: ARG001 - the signature moto calls
    path = os.environ["BACKSTOP_VIRTUAL_CLOCK"]
    with _LOCK:
        try:
            with open(path, encoding="ascii") as f:
                now = int(f.read().strip() or 0)
        except FileNotFoundError:
            now = 0
        with open(path + ".tmp", "w", encoding="ascii") as f:
            f.write(str(now + max(int(wait_seconds), 0)))
        os.replace(path + ".tmp", path)


wait_function.WaitFunction._wait_interval = _advance

from moto.server import main  # noqa: E402 - after the patch

sys.exit(main())
