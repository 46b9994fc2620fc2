"""clip(): the one way text is shortened to fit a phone line or a template field."""

from storage.text import clip


def test_clip_keeps_short_text_and_cuts_long_text_to_the_width_with_an_ellipsis():
    assert clip("楼道灯坏了", 5) == "楼道灯坏了"
    assert clip("3单元楼道灯坏了好几天", 6) == "3单元楼道…"
    assert len(clip("很" * 100, 20)) == 20
