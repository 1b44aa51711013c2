"""Newline framing for the TCP stream: keeps the partial tail, caps line length."""

from __future__ import annotations

from typing import NamedTuple


class Framed(NamedTuple):
    complete: bytes  # whole lines (newline-separated), ready for LineParser.parse
    overlong: int  # lines discarded for exceeding the cap (each counted once)


class LineBuffer:
    """Feed it stream chunks; it returns the complete lines and keeps the rest.

    A line longer than ``max_line_length`` is discarded up to its newline and reported
    once, so a peer cannot make us buffer without bound.
    """

    def __init__(self, max_line_length: int) -> None:
        self.max_line_length = max_line_length
        self._tail = b""
        self._discarding = False  # inside an overlong line, dropping until "\n"

    @property
    def pending(self) -> int:
        """Bytes held of a line not yet terminated."""
        return len(self._tail)

    def feed(self, data: bytes) -> Framed:
        """Append a chunk; return the lines it completes. Lines longer than the cap
        that end inside the result are left for the parser to reject (it counts them)."""
        cap = self.max_line_length
        cut = data.rfind(b"\n")
        if cut < 0:  # no line ends in this chunk
            if self._discarding:
                return Framed(b"", 0)
            self._tail += data  # bounded: never longer than cap + one chunk
            if _over(self._tail, cap):
                self._tail = b""
                self._discarding = True
                return Framed(b"", 1)
            return Framed(b"", 0)
        head = data[: cut + 1]
        if self._discarding:
            # The overlong line ends at the first newline: drop it, keep the rest.
            head = head[head.find(b"\n") + 1 :]
            self._discarding = False
            prefix = b""
        else:
            prefix = self._tail
        self._tail = data[cut + 1 :]
        overlong = 0
        if _over(self._tail, cap):
            self._tail = b""
            self._discarding = True
            overlong = 1
        return Framed(prefix + head, overlong)

    def finish(self) -> bytes:
        """At end of stream: the unterminated last line, if any (a peer may omit "\\n")."""
        tail, self._tail = self._tail, b""
        return b"" if self._discarding else tail


def _over(pending: bytes, cap: int) -> bool:
    """Past the cap, not counting the "\r" of a CRLF line: the parser strips it before
    applying the cap, and a line's fate must not depend on where a chunk ends."""
    return len(pending) > cap and not (len(pending) == cap + 1 and pending[-1:] == b"\r")
