"""The demo's live view: a status block kept at the bottom of a terminal, events above it.

On a terminal the block (a few lines, each cut to the terminal's width so that none wraps) is
redrawn in place; an event (an injected fault, a finished recovery, a log record) is written
above it: the block is erased, the event printed, the block drawn again. Nothing overwrites a
line that is not the block's own, so log lines and events stay readable and no stale copy of
the block is left behind. Elsewhere (a pipe, a file, CI) events are plain lines and the status
is a line every few seconds.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import TextIO


class LiveView:
    def __init__(self, out: TextIO, every: float = 2.0) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.every = every
        self.block: list[str] = []
        self.drawn = 0  # lines of the block now on screen
        self.last_plain = 0.0

    def _width(self) -> int:
        return max(20, shutil.get_terminal_size((100, 24)).columns)

    def _erase(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the block's first line, clear to the end
            self.drawn = 0

    def _draw(self) -> None:
        width = self._width() - 1
        for line in self.block:
            self.out.write((line if len(line) <= width else line[: width - 3] + "...") + "\n")
        self.drawn = len(self.block)

    def status(self, lines: list[str], force: bool = False) -> None:
        """Show the status block now (terminal) or when a plain line is due (elsewhere)."""
        self.block = list(lines)
        if self.tty:
            self._erase()
            self._draw()
            self.out.flush()
        elif force or time.monotonic() - self.last_plain >= self.every:
            self.last_plain = time.monotonic()
            print(" | ".join(line.strip() for line in lines), file=self.out, flush=True)

    def event(self, text: str) -> None:
        """A line above the block (on a terminal) or a plain line (elsewhere)."""
        if self.tty:
            self._erase()
            self.out.write(text.rstrip("\n") + "\n")
            self._draw()
            self.out.flush()
        else:
            print(text, file=self.out, flush=True)

    def close(self) -> None:
        """Leave the last block on screen as it is; later output starts below it."""
        self.drawn = 0


class LogToView(logging.Handler):
    """Log records as events of a live view, so that they never break its block."""

    def __init__(self, view: LiveView, prefix: str = "") -> None:
        super().__init__()
        self.view = view
        self.prefix = prefix
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.view.event(self.prefix + self.format(record))
        except Exception:
            self.handleError(record)


class routed_logs:
    """While active, the root logger's stream handlers write through ``view`` instead."""

    def __init__(self, view: LiveView) -> None:
        self.view = view
        self.handler = LogToView(view, "        log  ")
        self.removed: list[logging.Handler] = []

    def __enter__(self) -> routed_logs:
        root = logging.getLogger()
        if self.view.tty:
            self.removed = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                            and not isinstance(h, logging.FileHandler)]
            for h in self.removed:
                root.removeHandler(h)
            self.handler.setLevel(min((h.level for h in self.removed), default=logging.NOTSET))
            root.addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        if self.handler in root.handlers:
            root.removeHandler(self.handler)
        for h in self.removed:
            root.addHandler(h)
