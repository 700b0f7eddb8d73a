"""Progress of long operations on stderr: one line redrawn in place, a bar when the amount of work
is known and a spinner when it is not. Drawn only when stderr is a terminal, unless `--progress`
forces it; `--no-progress` and az's `--only-show-errors` turn it off. stdout (the results) never
carries any of it.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from types import TracebackType
from typing import TextIO

AUTO, ON, OFF = "auto", "on", "off"
_SPINNER = "|/-\\"


def add_progress_options(
    parser: argparse.ArgumentParser, *, only_show_errors: bool = False
) -> None:
    """`--progress/--no-progress`; and `--only-show-errors` for a command without `--output`
    (`add_output_option` adds it otherwise)."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw progress on stderr even when it is not a terminal (--no-progress: never)",
    )
    if only_show_errors:
        parser.add_argument(
            "--only-show-errors", action="store_true", help="no progress, only results and errors"
        )


def progress_mode(args: argparse.Namespace) -> str:
    """OFF for --no-progress or --only-show-errors, ON for --progress, else AUTO."""
    forced = getattr(args, "progress", None)
    if forced is False or getattr(args, "only_show_errors", False):
        return OFF
    return ON if forced else AUTO


def draws(mode: str, stream: TextIO) -> bool:
    """Whether progress is drawn on `stream` in this mode."""
    if mode == AUTO:
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())
    return mode == ON


class Progress:
    """A line on stderr while an operation runs. A background thread keeps the spinner and the
    clock moving while the caller blocks on the network. Use as a context manager."""

    WIDTH = 30
    TICK = 0.1

    def __init__(
        self, label: str, mode: str = AUTO, stream: TextIO | None = None, *, unit: str = ""
    ) -> None:
        self.label = label
        self.unit = unit
        self._stream = stream if stream is not None else sys.stderr
        self.active = draws(mode, self._stream)
        self._text = ""
        self._done: int | None = None
        self._total: int | None = None
        self._frame = 0
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self._t0, 1)

    def __enter__(self) -> Progress:
        if self.active:
            self._draw()
            self._thread = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def update(
        self, text: str | None = None, done: int | None = None, total: int | None = None
    ) -> None:
        """Show `text` (a state, a step) and, when known, `done` of `total`."""
        with self._lock:
            if text is not None:
                self._text = text
            if done is not None:
                self._done = done
            if total is not None:
                self._total = total
        self._draw()

    def say(self, line: str, file: TextIO | None = None) -> None:
        """Print `line` (to stdout by default) without the bar getting in its way."""
        with self._lock:
            if self.active:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
            print(line, file=file if file is not None else sys.stdout, flush=True)
        self._draw()

    def close(self) -> None:
        """Stop drawing; the last state stays on its own line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.active:
            self._draw()
            with self._lock:
                self._stream.write("\n")
                self._stream.flush()
            self.active = False

    def line(self) -> str:
        """The line as drawn now."""
        done, total, text = self._done, self._total, self._text
        if total:
            filled = min(self.WIDTH, self.WIDTH * (done or 0) // total)
            shown = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done or 0}/{total}"
            shown += f" {self.unit}" if self.unit else ""
        else:
            shown = _SPINNER[self._frame % len(_SPINNER)]
        parts = [self.label, shown, text, f"{self.seconds:.1f} s"]
        return " ".join(p for p in parts if p)

    def _tick(self) -> None:
        while not self._stop.wait(self.TICK):
            self._frame += 1
            self._draw()

    def _draw(self) -> None:
        if not self.active:
            return
        with self._lock:
            self._stream.write(f"\r{self.line()}\x1b[K")
            self._stream.flush()
