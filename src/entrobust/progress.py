"""Progress reporting with one rule everywhere (evaluation, ``entrobust eval``, certify, training).

* On a terminal (the stream, by default ``sys.stderr``, is a TTY) a stage shows a tqdm bar
  with its rate and ETA; the bar is removed when the stage ends.
* Anywhere else (a log file, CI, a pipe) no bar is drawn, so the log holds no carriage
  returns: a stage writes one line when it ends, ``eval: PGD-10 eps=0.3: 200/200 examples,
  4.1s, robust 85.0%``, and one more every ``heartbeat_s`` seconds while it runs, so a long
  stage is never silent.

Use it as a context manager, one per stage::

    with Progress("eval", "PGD-10 eps=0.3", total=200, unit="examples") as p:
        for batch in batches:
            ...
            p.update(len(batch))
            p.set_postfix(f"robust {acc:.1f}%")
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Any

__all__ = ["HEARTBEAT_S", "Progress", "is_terminal"]

#: seconds between the lines a running stage writes outside a terminal
HEARTBEAT_S = 60.0


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class Progress:
    """The progress of one stage: ``total`` units of work called ``unit``.

    Args:
        tag: what is running (``"eval"``, ``"train"``, ``"certify"``); starts every line.
        label: the stage (``"PGD-10 eps=0.3"``, ``"epoch 3/10"``).
        total: units in the stage.
        unit: their name, plural (``"examples"``, ``"steps"``, ``"images"``).
        initial: units already done (a resumed stage).
        enabled: ``False`` reports nothing at all.
        stream: where to write (default: ``sys.stderr`` at construction time).
        heartbeat_s: outside a terminal, also write a line when this many seconds passed since
            the last one (``None``: only the final line).
    """

    def __init__(
        self,
        tag: str,
        label: str,
        total: int,
        *,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        stream: IO[str] | None = None,
        heartbeat_s: float | None = HEARTBEAT_S,
    ) -> None:
        self.tag, self.label, self.total, self.unit = tag, label, int(total), unit
        self.n = int(initial)
        self.postfix = ""
        self.enabled = enabled
        self.stream: IO[str] = sys.stderr if stream is None else stream
        self.heartbeat_s = heartbeat_s
        self._start = self._last_line = time.perf_counter()
        self._closed = False
        self._bar: Any = None
        if enabled and is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=self.n,
                desc=f"{tag}: {label}",
                unit=f" {unit}",
                file=self.stream,
                dynamic_ncols=True,
                leave=False,
            )

    def update(self, n: int = 1) -> None:
        """``n`` more units are done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and self.heartbeat_s is not None:
            if time.perf_counter() - self._last_line >= self.heartbeat_s:
                self._write_line()

    def set_postfix(self, text: str) -> None:
        """A short status shown after the count (``robust 85.0%``, ``loss 0.4123``)."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def close(self) -> None:
        """End the stage: remove the bar, or write the stage's line. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._write_line()

    def line(self) -> str:
        """The stage's one-line summary so far."""
        text = f"{self.tag}: {self.label}: {self.n}/{self.total} {self.unit}, "
        text += f"{time.perf_counter() - self._start:.1f}s"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _write_line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last_line = time.perf_counter()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
