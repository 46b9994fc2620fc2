"""Text that must fit a phone screen or a template field."""

from __future__ import annotations


def clip(text: str, width: int) -> str:
    """At most `width` characters: longer text keeps its start and ends with "…"."""
    return text if len(text) <= width else text[: width - 1] + "…"


PHRASE_ENDS = "，。；：！？、,.;:!? "


def bare(text: str) -> str:
    """The words of a reply without the punctuation around them (a voice message's ends with 。): empty when
    there were no words at all."""
    return text.strip().strip(PHRASE_ENDS + "…～~")


def clip_phrase(text: str, width: int) -> str:
    """At most `width` characters, cut after the last whole phrase that fits (at punctuation or a space), ending
    with "…"; a text with no such place in its second half is cut like `clip`."""
    if len(text) <= width:
        return text
    head = text[: width - 1]
    cut = max(head.rfind(mark) for mark in PHRASE_ENDS)
    if cut < width // 2:
        return clip(text, width)
    return head[:cut].rstrip(PHRASE_ENDS) + "…"
