"""Parsing a server-sent event stream into ``(event, data)`` pairs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def parse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Yield ``(event, data)`` per event; comments (keep-alives) are skipped; ``event`` defaults to "message"."""
    event = ""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event or "message", "\n".join(data)
