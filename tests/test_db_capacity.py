"""PostgreSQL at its connection limit refuses a new connection (TooManyConnectionsError): a step that needs one
was not done, and the resident must be told 「系统繁忙…请稍后再发」, not 「系统开小差了」 — bench/fault.py met it
when a freeze left the hung connections open on the server while the pools opened new ones. Proven against the
real server: a login role whose CONNECTION LIMIT is taken (the server's own limit, max_connections, is shared by
every test; superusers are held to neither)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text

from storage.db import Database, is_unavailable
from tests.conftest import PG_URL, RUN_ID, _pg_async_url

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (STEWARD_TEST_DATABASE_URL)")


async def test_a_server_at_its_connection_limit_is_an_outage_not_a_bug():
    role = f"steward_full_{RUN_ID}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
    try:
        scheme, rest = PG_URL.split("://", 1)
        url = f"{scheme}://{role}@{rest.split('@', 1)[1]}"
        holder = await asyncpg.connect(url)  # the one connection the role is allowed
        db = Database(_pg_async_url(url))
        try:
            with pytest.raises(Exception) as refused:
                await db.rows(text("SELECT 1"))
            assert "too many connections" in repr(refused.value) + repr(refused.value.__cause__)
            assert is_unavailable(refused.value)
        finally:
            await db.dispose()
            await holder.close()
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


def test_a_constraint_violation_is_still_not_an_outage():
    assert not is_unavailable(asyncpg.exceptions.UniqueViolationError("duplicate key"))
