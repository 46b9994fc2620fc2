"""Text that must fit a phone screen or a template field."""

from __future__ import annotations


def clip(text: str, width: int) -> str:
    """At most `width` characters: longer text keeps its start and ends with "…"."""
    return text if len(text) <= width else text[: width - 1] + "…"
