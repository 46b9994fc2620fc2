"""`菜单`: the numbered main menu built from every flow's menu entry; a number starts that flow.

Someone holding staff roles gets their own menu instead: the staff entries of their roles (each declared next
to its handler with `@router.staff_menu`), then one entry leading to the resident menu they still have.
`命令` lists the typed commands the sender's roles may use (declared with `help=` on the command); for staff
`帮助` does too, while for residents `帮助` stays the menu (numbers are their help).
"""

from __future__ import annotations

from handlers.framework import NEXT_PAGE_HINT, Context, HelpLine, MenuEntry, Router

router = Router("menu", "主菜单")

GREETING = "民需管家为您服务，请回复数字："
FOOTER = "随时回复「取消」可退出当前操作。"
STAFF_GREETING = "工作人员菜单，请回复数字："
STAFF_FOOTER = "回复「命令」查看口令，「取消」退出当前操作。"
RESIDENT_ENTRY = "居民服务（反映问题等）"

# CLICK keys: the whole staff menu (the custom menu has room for a few staff buttons only) and the resident menu.
STAFF_MENU_KEY = "STAFF_MENU"
RESIDENT_MENU_KEY = "RESIDENT_MENU"

# A passive text reply holds 2048 bytes (~680 Chinese characters); a page of `命令` stays well inside that,
# and every person's commands fit two pages (tests/test_staff_menu.py checks the busiest combination of roles).
# A page is also at most one screen of lines, so a page never needs scrolling past what a glance takes in.
HELP_PAGE_CHARS = 520
HELP_PAGE_LINES = 20
HELP_PAGES = 3
STAFF_HELP_HEADING = "工作人员口令（编号见各列表）："
RESIDENT_HELP_HEADING = "常用口令（也可回复「菜单」按数字选择）："
HELP_CONTINUED = "口令（续）："
HELP_MORE = NEXT_PAGE_HINT
HELP_TAIL = "居民服务（反映问题等）在「菜单」的最后一项。"


def menu_text(ctx: Context) -> str:
    lines = [GREETING]
    for number, entry in enumerate(ctx.menu_entries, 1):
        lines.append(f"{number}. {entry.label}")
    lines.append(FOOTER)
    return "\n".join(lines)


def staff_menu_text(entries: list[MenuEntry]) -> str:
    labels = [e.label for e in entries] + [RESIDENT_ENTRY]
    return "\n".join([STAFF_GREETING, *(f"{n}. {label}" for n, label in enumerate(labels, 1)), STAFF_FOOTER])


@router.click(RESIDENT_MENU_KEY)
async def resident_menu(ctx: Context) -> str:
    return ctx.ask(menu_text(ctx), router.step("pick"), keys=[e.key for e in ctx.menu_entries])


@router.command("菜单", "menu", "?", "？", "你好", "您好", everywhere=True)
@router.click(STAFF_MENU_KEY)
async def show_menu(ctx: Context) -> str:
    left = _left_note(ctx)
    staff = await ctx.staff_menu_entries()
    if not staff:
        return left + await resident_menu(ctx)
    keys = [e.key for e in staff] + [RESIDENT_MENU_KEY]
    return left + ctx.ask(staff_menu_text(staff), router.step("pick"), keys=keys)


def _left_note(ctx: Context) -> str:
    """菜单 (or 你好) in the middle of a flow leaves it: say so (it had gone silently, and the next answer to the
    old question got 没太明白). Nothing to say for a menu or a list left open."""
    left = ctx.left_state
    if left is None or not ctx.engine.leaves_something(left):
        return ""
    return f"（已退出「{ctx.engine.flow_title(left)}」。）\n"


@router.state("pick", browsing="主菜单")
async def pick(ctx: Context) -> str | None:
    keys = ctx.data.get("keys") or [e.key for e in ctx.menu_entries]
    if not ctx.text.isdigit() or not 1 <= int(ctx.text) <= len(keys):
        # Not a menu number: treat it as a fresh message (a keyword or a need typed straight away).
        return await ctx.handle_afresh()
    return await ctx.start_click(keys[int(ctx.text) - 1])


def help_pages(lines: list[HelpLine], staff: bool) -> list[str]:
    """The lines under their heading, cut into pages of at most HELP_PAGE_CHARS characters."""
    heading = STAFF_HELP_HEADING if staff else RESIDENT_HELP_HEADING
    texts = [h.text for h in lines] + ([HELP_TAIL] if staff else [])
    pages: list[list[str]] = [[heading]]
    for text in texts:
        page = pages[-1]
        if len(page) > HELP_PAGE_LINES or sum(len(t) + 1 for t in page) + len(text) + len(HELP_MORE) > HELP_PAGE_CHARS:
            pages.append([HELP_CONTINUED])
        pages[-1].append(text)
    return ["\n".join(page) for page in pages]


@router.command("命令", "帮助", "help", *(f"{w}{sp}{n}" for w in ("命令", "帮助") for sp in ("", " ")
                                        for n in range(2, HELP_PAGES + 2)), everywhere=True)
async def show_help(ctx: Context) -> str:
    lines = await ctx.help_lines()
    staff = [h for h in lines if h.roles]
    if not staff and ctx.command_word.lower() in ("帮助", "help"):
        return await show_menu(ctx)
    pages = help_pages(staff or lines, staff=bool(staff))[:HELP_PAGES]
    wanted = int(ctx.command_word[-1]) if ctx.command_word[-1].isdigit() else 1
    if wanted > len(pages):
        return ctx.done(f"口令只有{len(pages)}页。回复「命令」从第一页看。")
    more = f"命令 {wanted + 1}" if wanted < len(pages) else ""
    return ctx.listing(pages[wanted - 1] + ("\n" + HELP_MORE if more else ""), more)
