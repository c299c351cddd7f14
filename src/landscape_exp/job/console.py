"""What a job prints: every line also goes to the run directory's ``run.log``; progress bars only
on a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class _Tee:
    """A text stream that also appends complete lines to a log file (progress-bar redraws, which
    carry a carriage return or an escape sequence, stay on the terminal)."""

    def __init__(self, stream: IO[str], log: IO[str]):
        self.stream, self.log, self._line = stream, log, ""

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        self._line += text
        while "\n" in self._line:
            line, self._line = self._line.split("\n", 1)
            if "\r" not in line and "\x1b" not in line:
                self.log.write(line + "\n")
                self.log.flush()
        return n

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding... of the real stream
        return getattr(self.stream, name)


@contextlib.contextmanager
def tee_to_log(path: str | Path) -> Iterator[None]:
    """Copy what this process prints (stdout and stderr) into ``path`` while the block runs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log:
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(old[0], log), _Tee(old[1], log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = old
