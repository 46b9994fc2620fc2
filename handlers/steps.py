"""Reusable flow steps: "pick one of these N" and the 大类 → 子项 picker.

    @pick_one(router, "pick", bound=True, not_a_number="afresh")
    async def activity_picked(ctx: Context, activity_id: int) -> str:   # the value of the chosen line
        ...

    return activity_picked.ask(ctx, "【志愿活动】回复序号查看或报名：", labels, values=ids)

    @pick_subitem(router, roles=LEADERS)
    async def subitem_picked(ctx: Context, code: str) -> str:            # "JZ-05"
        ...

    return subitem_picked.ask(ctx, "请选择问题大类：", text=text)

The steps are registered on the flow's own router, so the flow's saved answers are kept, `取消` names the flow,
and roles/bound apply as on any step. A continuation may `ctx.retry(...)`: the same list is asked again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from handlers.framework import Context, Router, numbers_hint
from storage.org import unit_names
from storage.roles import Role
from storage.taxonomy import load_taxonomy

Then = Callable[[Context, Any], Awaitable[str | None]]
Back = Callable[[Context], Awaitable[str | None]]

PICK_HINT = "请回复1到{n}之间的序号。"


class PickOne:
    """A numbered list under a heading; the answer (1..N) reaches `then` as the chosen value.

    Any other answer gets `hint` ("{n}" is the number of lines) and the same question, or — with
    `not_a_number="afresh"` — a text that is not a number is handled as a fresh message (a keyword typed
    instead of a choice). `back` adds a line `0. <label>` whose answer runs `on_back`. `browsing`: the list's
    name when it is only looked through (取消 there says it left that list, not that anything typed is lost).
    """

    def __init__(
        self, router: Router, step: str, then: Then, *, hint: str = PICK_HINT, not_a_number: str = "retry",
        key: str = "_pick", back: str | None = None, on_back: Back | None = None, roles=None, bound: bool = False,
        browsing: str | None = None, title: str | None = None, kept: str | None = None,
    ) -> None:
        if not_a_number not in ("retry", "afresh"):
            raise ValueError(f"not_a_number must be 'retry' or 'afresh', not {not_a_number!r}")
        if (back is None) != (on_back is None):
            raise ValueError("back and on_back go together")
        self.step = router.step(step)
        if browsing:
            router.browsing[self.step] = browsing
        if title:
            router.step_titles[self.step] = title
        if kept:  # a question whether to end or cancel something: 取消 says it stands
            router.kept[self.step] = kept
        self.then = then
        self.hint = hint
        self.afresh = not_a_number == "afresh"
        self.key = key  # where the values of the lines are saved in the flow's data
        self.back = back
        self.on_back = on_back
        router.state(step, roles=roles, bound=bound)(self._answer)

    def question(self, heading: str, labels: Sequence[str], footer: str = "", first: int = 1) -> str:
        lines = [heading, *(f"{n}. {label}" for n, label in enumerate(labels, first))]
        if self.back:
            lines.append(f"0. {self.back}")
        if footer:
            lines.append(footer)
        return "\n".join(lines)

    def ask(
        self, ctx: Context, heading: str, labels: Sequence[str], values: Sequence[Any] | None = None, *,
        footer: str = "", first: int = 1, **data: Any,
    ) -> str:
        """Ask the question; `values[i]` (default: the index i) goes to `then` when line i+1 is picked.
        `first` numbers the lines from there (a later page of a list numbered on: 9, 10, …)."""
        chosen = list(values) if values is not None else list(range(len(labels)))
        if len(chosen) != len(labels):
            raise ValueError("one value per label")
        return ctx.ask(self.question(heading, labels, footer, first), self.step,
                       **{self.key: chosen, f"{self.key}_first": first}, **data)

    async def _answer(self, ctx: Context) -> str | None:
        values = ctx.data.get(self.key) or []
        first = ctx.data.get(f"{self.key}_first", 1)
        last = first + len(values) - 1
        hint = numbers_hint(first, last) if self.hint == PICK_HINT else self.hint.format(n=last)
        text = ctx.text.strip()
        if self.back and text == "0":
            return await self.on_back(ctx)
        if not text.isdigit():
            if self.afresh:
                return await ctx.handle_afresh()
            return ctx.retry(hint)
        if not first <= int(text) <= last:
            return ctx.retry(hint)
        return await self.then(ctx, values[int(text) - first])


def pick_one(router: Router, step: str, **options: Any) -> Callable[[Then], PickOne]:
    """Decorate the continuation of a pick-one step; the decorated name becomes the `PickOne` (call `.ask`)."""

    def register(then: Then) -> PickOne:
        return PickOne(router, step, then, **options)

    return register


# ------------------------------------------------------------------------------------- 大类 → 子项

CATEGORY_HEAD = "请选择问题大类："
CATEGORY_HINT = "请回复 1-{n} 的数字。"
SUBITEM_HEAD = "「{category}」下请选择具体问题："
SUBITEM_HINT = "请回复 1-{n} 的数字，0 返回大类。"
BACK_TO_CATEGORIES = "返回大类"
OTHER = "其他/未分类（交工作人员分类）"
OTHER_LINE = -1  # the value of the 大类 line `other=True` adds


class SubItemPicker:
    """The taxonomy's 大类 list, then the chosen 大类's 子项 with `0. 返回大类`; the sub-item code goes to `then`.

    Two steps of the flow's router: `step` (the 大类) and `step + "_item"` (the 子项). `0` asks the 大类
    question again, as the flow first asked it. `other=True` ends the 大类 list with 「其他/未分类」, which
    sends `None` to `then` at once: a resident whose problem fits no 子项 still gets it filed (staff classify).
    """

    def __init__(self, router: Router, step: str, then: Then, *, roles=None, bound: bool = False,
                 other: bool = False) -> None:
        self.then = then
        self.other = other
        self.categories = PickOne(router, step, self._category_picked, hint=CATEGORY_HINT, key="_categories",
                                  roles=roles, bound=bound)
        self.items = PickOne(router, f"{step}_item", self._item_picked, hint=SUBITEM_HINT, key="_subitems",
                             back=BACK_TO_CATEGORIES, on_back=self._back, roles=roles, bound=bound)

    def ask(self, ctx: Context, heading: str = CATEGORY_HEAD, **data: Any) -> str:
        """Ask for the 大类 under `heading` (the flow's own question, e.g. "改为哪一大类？")."""
        names = list(load_taxonomy().by_category())
        values = list(range(len(names)))
        if self.other:
            names.append(OTHER)
            values.append(OTHER_LINE)
        return self.categories.ask(ctx, heading, names, values, _category_head=heading, **data)

    async def _category_picked(self, ctx: Context, index: int) -> str | None:
        if index == OTHER_LINE:
            return await self.then(ctx, None)
        name, items = list(load_taxonomy().by_category().items())[index]
        return self.items.ask(ctx, SUBITEM_HEAD.format(category=name), [i.name for i in items],
                              [i.code for i in items])

    async def _back(self, ctx: Context) -> str:
        return self.ask(ctx, ctx.data.get("_category_head") or CATEGORY_HEAD)

    async def _item_picked(self, ctx: Context, code: str) -> str | None:
        return await self.then(ctx, code)


def pick_subitem(router: Router, step: str = "pick_category", **options: Any) -> Callable[[Then], SubItemPicker]:
    """Decorate the continuation that receives the chosen sub-item code; it becomes the `SubItemPicker`."""

    def register(then: Then) -> SubItemPicker:
        return SubItemPicker(router, step, then, **options)

    return register


# ------------------------------------------------------------------------------------- 为哪个社区


NOT_COMMUNITY_STAFF = "这项操作需以社区工作人员身份进行，请联系社区开通。"


async def staffed_communities(ctx: Context) -> list[tuple[int, str]]:
    """The communities the sender staffs (社区工作人员), as (id, name) by id."""
    ids = sorted((await ctx.actor()).ids(Role.COMMUNITY_STAFF))
    names = await unit_names(ctx.db, "community", set(ids))
    return [(i, names[i][1] if i in names else f"社区{i}") for i in ids]


async def community_or_ask(ctx: Context, picker: PickOne, question: str,
                           one: Callable[[int], Awaitable[str]] | None = None, **data: Any) -> str | None:
    """A flow that acts for one community (发布活动, 新建项目, 开启评议): for staff of several, `picker` asks which
    (「您在2个社区任职，为哪个社区发布活动？」, `data` kept for its continuation); for staff of one, that community
    goes on at once — to `one` if given, else to the picker's own continuation. None when they staff none."""
    communities = await staffed_communities(ctx)
    if not communities:
        return None
    if len(communities) > 1:
        return picker.ask(ctx, f"您在{len(communities)}个社区任职，{question}", [name for _, name in communities],
                          [cid for cid, _ in communities], **data)
    return await (one or (lambda cid: picker.then(ctx, cid)))(communities[0][0])
