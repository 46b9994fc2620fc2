"""Outbox jobs: drain due notifications (recovering dead senders' claims first)."""

from __future__ import annotations

from scheduler.registry import JobContext, job


@job("outbox.drain", every_seconds=3)
async def drain_outbox(ctx: JobContext) -> int:
    """Send what is due, at most 20 batches a run; commits from this process also wake a prompt drain."""
    return await ctx.services["sender"].drain(max_batches=20)
