"""Text that must fit a phone screen or a template field."""

from __future__ import annotations

import re


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


# A phone number as people write one. A mainland mobile: 1[3-9] and 9 more digits, a space or hyphen allowed
# between any two (138 1234 5678, 1381234 5678, 138-1234-5678), optionally after +86/0086/86 or a 0. A landline
# with its area code: 0 and 2-3 digits, optionally a space or hyphen, then 7-8 digits starting 2-8 (0535-6612345,
# 010 62345678): residents give one as often as a mobile, and the area code keeps it apart from dates (2026-01-06),
# tickets (20261206-0006) and amounts. A number without its area code (6612345) is not masked: it cannot be told
# from a room, a count or an amount. Neither is part of a longer run of digits: a 13-digit timestamp stays whole,
# and a landline is not read out of a decimal fraction (0.0123456789).
_PHONE = re.compile(
    r"(?<![0-9])(?:(?:\+|00)?86[ -]?|0)?(?P<mobile>1[ -]?[3-9](?:[ -]?[0-9]){9})(?![0-9])"
    r"|(?<![0-9.])(?P<area>0[1-9][0-9]{1,2}[ -]?)(?P<local>[2-8][0-9]{6,7})(?![0-9])"
)


def _masked(match: re.Match) -> str:
    if match.group("area"):
        return match.group("area") + "****" + match.group("local")[-4:]
    whole, start = match.group(), match.start("mobile") - match.start()
    digits = [i for i, c in enumerate(whole) if c.isdigit() and i >= start]
    return whole[: digits[2] + 1] + "****" + whole[digits[-4]:]


def mask_phones(text: str) -> str:
    """`text` with every phone number in it shown as 138****5678 (0535-****2345): the shape
    storage.residents.mask_phone gives a resident's own number. For what residents type (a need's words, a note)
    wherever it is shown, and for every log line."""
    return _PHONE.sub(_masked, text)


def phones_in(text: str) -> list[str]:
    """The phone numbers `mask_phones` would hide in `text`, as digits (a mobile without its country prefix), each
    once: what an audited reveal shows in full."""
    found = (m.group("mobile") or m.group("area") + m.group("local") for m in _PHONE.finditer(text))
    return list(dict.fromkeys("".join(c for c in number if c.isdigit()) for number in found))
