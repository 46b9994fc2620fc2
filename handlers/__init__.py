"""Every flow's router, in the order the engine consults them. Nothing else wires flows."""

from handlers import basics, menu

ROUTERS = [menu.router, basics.router]
