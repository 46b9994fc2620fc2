"""Who is acting: one Actor per chat message, CLI command, scheduler job or console request.

An Actor carries the person's active role grants, read once, and the name the audit log records. Storage
operations take an Actor and ask `storage/policy.py` whether it may do what it asks; nothing else decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Database
from storage.roles import Role, RoleGrant, active_grants

PARTNER_PREFIX = "open311:"  # a partner actor's name; no resident's ("resident:<id>") or operator's starts so


@dataclass(frozen=True)
class Actor:
    name: str  # the audit log's actor: "resident:<id>", "cli:<user>", "system"
    resident_id: int | None = None
    grants: tuple[RoleGrant, ...] = ()
    # An operator at the command line or the system's own jobs: the whole district, no grant needed.
    trusted: bool = False

    @classmethod
    def operator(cls, name: str) -> Actor:
        """A command-line operator ("cli:<user>"): whoever can run `steward` on the server runs the district."""
        return cls(name=name, trusted=True)

    @classmethod
    def system(cls) -> Actor:
        return cls(name="system", trusted=True)

    @classmethod
    def partner(cls, name: str) -> Actor:
        """Another system that hands needs over (a 12345 hotline, through Open311), known by its API key."""
        return cls(name=PARTNER_PREFIX + name)

    @property
    def is_partner(self) -> bool:
        return self.name.startswith(PARTNER_PREFIX)

    @classmethod
    def resident(cls, resident_id: int, grants: tuple[RoleGrant, ...] = ()) -> Actor:
        return cls(name=f"resident:{resident_id}", resident_id=resident_id, grants=grants)

    def ids(self, role: Role) -> set[int]:
        """The ids of the parts of the organisation this actor holds `role` over (buildings, grids, …)."""
        return {g.scope_id for g in self.grants if g.role == role.value and g.scope_id is not None}

    def holds(self, *roles: Role) -> bool:
        wanted = {r.value for r in roles}
        return any(g.role in wanted for g in self.grants)

    @property
    def is_admin(self) -> bool:
        return self.trusted or self.holds(Role.ADMIN)

    @property
    def is_staff(self) -> bool:
        return self.is_admin or self.holds(Role.COMMUNITY_STAFF, Role.DISTRICT_STAFF)

    @property
    def communities(self) -> set[int] | None:
        """The communities this actor staffs; None means every community (an admin or a trusted caller)."""
        return None if self.is_admin else self.ids(Role.COMMUNITY_STAFF)


async def actor_for(db: Database, resident_id: int) -> Actor:
    """The resident as an actor, with their active grants (one query)."""
    return Actor.resident(resident_id, tuple(await active_grants(db, resident_id)))
