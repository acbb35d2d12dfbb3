"""The interpreter's thread switch interval while the plugin runs.

The store's writer thread spends most of each commit outside the GIL (DuckDB's flush releases
it), and then needs the GIL back to report the commit. Behind a busy event loop it gets it only
when the loop is forced to drop it: after ``sys.getswitchinterval()``, 5 ms by default. Every
client waiting for its 202 waits that long too, so under a closed-loop load (each client sends
its next report after the answer to the previous one) the switch interval, not the disk, sets
the throughput. Measured with wrk -c64 on POST /errors: a 1 ms interval gave 13% more requests
per second than 5 ms; 0.2 ms gave less (the loop then pays for the switches).

The interval is process-wide, so it is changed only when the host left CPython's default, and
put back when the last integration that changed it stops. ``thread_switch_interval = 0`` in the
config leaves it alone.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

logger = logging.getLogger(__name__)

CPYTHON_DEFAULT = 0.005  # sys.getswitchinterval() of an interpreter nobody tuned


class SwitchInterval:
    """Holders share one change: the first ``hold`` sets the interval, the last ``release``
    restores what was there (unless someone changed it meanwhile). ``get`` and ``set`` are
    injectable for tests; they default to ``sys``'s."""

    def __init__(
        self,
        get: Callable[[], float] = sys.getswitchinterval,
        set_: Callable[[float], None] = sys.setswitchinterval,
    ) -> None:
        self._get = get
        self._set = set_
        self._holders: set[int] = set()
        self._previous: float | None = None  # what was there before our change
        self._ours: float | None = None  # the value we set

    def hold(self, holder: object, wanted: float) -> bool:
        """Lower the interval to ``wanted`` for ``holder`` (0: do nothing). True when it is
        ``wanted`` now because of us."""
        if wanted <= 0:
            return False
        if self._ours is not None:  # set already, by another holder
            self._holders.add(id(holder))
            return True
        current = self._get()
        if abs(current - CPYTHON_DEFAULT) > 1e-9:
            logger.debug("thread switch interval left at the host's %.6f s", current)
            return False
        self._set(wanted)
        self._previous, self._ours = current, wanted
        self._holders.add(id(holder))
        return True

    def release(self, holder: object) -> None:
        """``holder`` no longer needs the change; the last one restores the previous interval."""
        if id(holder) not in self._holders:
            return
        self._holders.discard(id(holder))
        if self._holders or self._ours is None or self._previous is None:
            return
        if abs(self._get() - self._ours) <= 1e-9:  # nobody changed it since: ours to restore
            self._set(self._previous)
        self._previous = self._ours = None


SWITCH_INTERVAL = SwitchInterval()  # the process's one
