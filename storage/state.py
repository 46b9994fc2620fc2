"""Conversation state: where each resident is in a flow, kept in the KeyValueStore (Redis or memory).

A flow step expires after 30 idle minutes. The key itself lives longer, so a resident who comes back
after that is told which flow was left instead of having their answer misread by another flow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from storage.clock import Clock
from storage.kv import Held, KeyValueStore, fetched

IDLE_LIMIT = 30 * 60
REMEMBER_EXPIRED = 24 * 3600


@dataclass
class FlowState:
    name: str  # "<router>.<step>", e.g. "bind.room"
    data: dict = field(default_factory=dict)
    touched: float = field(default_factory=time.time)

    @property
    def flow(self) -> str:
        return self.name.split(".", 1)[0]

    def expired(self, now: float | None = None) -> bool:
        return (now or time.time()) - self.touched > IDLE_LIMIT


class StateStore:
    def __init__(self, kv: KeyValueStore, clock: Clock | None = None) -> None:
        self.kv = kv
        self.clock = clock

    def now(self) -> float:
        """Seconds on the injectable clock (tests move it), else wall-clock time."""
        return self.clock.now().timestamp() if self.clock else time.time()

    @staticmethod
    def key(openid: str) -> str:
        return "state:" + openid

    async def load(self, openid: str) -> FlowState | None:
        raw = await self.kv.get(self.key(openid))
        if not raw:
            return None
        item = json.loads(raw)
        return FlowState(item["n"], item.get("d") or {}, item.get("t") or 0.0)

    async def take(self, openid: str, ahead: Mapping[str, str | None] | None = None) -> FlowState | None:
        """Read and remove in one step: the caller writes back whatever state follows. `ahead`: the keys a lock
        already took (storage.kv's `lock(take=...)`), when it holds this one."""
        raw = await fetched(self.kv, self.key(openid), ahead, take=True)
        if not raw:
            return None
        item = json.loads(raw)
        return FlowState(item["n"], item.get("d") or {}, item.get("t") or 0.0)

    async def save(self, openid: str, state: FlowState, held: Held | None = None, *, reply: str | None = None) -> None:
        """`held`: the resident's lock, released with this write in one round trip (with `reply` for its Swap)."""
        state.touched = self.now()
        raw = json.dumps({"n": state.name, "d": state.data, "t": state.touched}, ensure_ascii=False)
        if held is not None:
            await held.release({self.key(openid): (raw, IDLE_LIMIT + REMEMBER_EXPIRED)}, value=reply)
        else:
            await self.kv.set(self.key(openid), raw, ttl=IDLE_LIMIT + REMEMBER_EXPIRED)

    async def clear(self, openid: str) -> None:
        await self.kv.delete(self.key(openid))
