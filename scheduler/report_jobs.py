"""The monthly report: from the 1st, last month's spreadsheets for every community and the district, and a notice
to their staff (storage/reports.py). Hourly: a month already done costs one file check."""

from __future__ import annotations

from scheduler.registry import JobContext, job
from storage.reports import monthly_reports
from storage.settings import current_settings


@job("reports.monthly", every_seconds=3600)
async def monthly(ctx: JobContext) -> int:
    settings = ctx.settings if ctx.settings is not None else current_settings()
    return await monthly_reports(ctx.db, settings.data_dir, ctx.clock.now())
