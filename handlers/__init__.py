"""Every flow's router, in the order the engine consults them. Nothing else wires flows."""

from handlers import (
    activities,
    basics,
    binding,
    broadcast,
    claims,
    console_link,
    consultation,
    deliveries,
    leader,
    menu,
    needs,
    points,
    projects,
    review,
    staff,
    stats,
    survey,
)

ROUTERS = [menu.router, basics.router, binding.router, claims.router]
ROUTERS += [needs.router, leader.router, staff.router]
ROUTERS += [projects.router, review.router, survey.router]
ROUTERS += [consultation.router, broadcast.router]
ROUTERS += [points.router, activities.router]
ROUTERS += [deliveries.router]
ROUTERS += [stats.router]
ROUTERS += [console_link.router]
