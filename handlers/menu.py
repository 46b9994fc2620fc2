"""`菜单`/`帮助`: the numbered main menu built from every flow's menu entry; a number starts that flow."""

from __future__ import annotations

from handlers.framework import Context, Router

router = Router("menu", "主菜单")

GREETING = "民需管家为您服务，请回复数字："
FOOTER = "随时回复「取消」可退出当前操作。"


def menu_text(ctx: Context) -> str:
    lines = [GREETING]
    for number, entry in enumerate(ctx.menu_entries, 1):
        lines.append(f"{number}. {entry.label}")
    lines.append(FOOTER)
    return "\n".join(lines)


@router.command("菜单", "帮助", "help", "menu", "?", "？", "你好", "您好", everywhere=True)
async def show_menu(ctx: Context) -> str:
    return ctx.ask(menu_text(ctx), router.step("pick"))


@router.state("pick")
async def pick(ctx: Context) -> str | None:
    entries = ctx.menu_entries
    if not ctx.text.isdigit() or not 1 <= int(ctx.text) <= len(entries):
        # Not a menu number: treat it as a fresh message (a keyword or a need typed straight away).
        return await ctx.handle_afresh()
    return await ctx.start(entries[int(ctx.text) - 1].route)
