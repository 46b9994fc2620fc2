"""The staff console: a second front door onto the same rules as chat, for staff at an office PC.

Served under /console by `steward serve` (setting STEWARD_CONSOLE, on by default) or alone by `steward console`.
Server-rendered Chinese pages (aiohttp-jinja2), every asset served from `static/` (intranets reach no CDN).
Sign-in is a single-use link staff get by sending 「后台」 in chat (storage/console_auth.py); every page acts as
the signed-in person's Actor through the storage operations chat uses, so it can do nothing chat would refuse.

- `auth.py`: sign in and out, and the gate (session, the person's grants afresh, CSRF on every POST).
- `pages.py`: 今日, 台账 (+ XLSX/CSV export), a need's file with the staff actions as forms.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from bot.console import auth, c2, c3, c4, pages, unit_projects
from bot.console import stats as stats_pages
from bot.console.common import COOKIE, DEPS_KEY, PREFIX, ConsoleDeps
from storage.text import mask_phones

HERE = Path(__file__).parent

__all__ = ["COOKIE", "PREFIX", "ConsoleDeps", "console_app"]


def console_app(deps: ConsoleDeps) -> web.Application:
    """The console as a sub-application: mount it with `app.add_subapp(PREFIX, console_app(deps))`."""
    app = web.Application(middlewares=[auth.gate], client_max_size=64 * 1024)
    app[DEPS_KEY] = deps
    # `|masked`: what residents typed, with the phone numbers in it masked, as chat shows it.
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         filters={"masked": mask_phones})
    app.add_routes(auth.routes)
    app.add_routes(pages.routes)
    app.add_routes(c2.routes)
    app.add_routes(c3.routes)
    app.add_routes(c4.routes)
    app.add_routes(unit_projects.routes)
    app.add_routes(stats_pages.routes)
    app.router.add_static("/static", HERE / "static", name="static")
    return app
