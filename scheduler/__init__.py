"""Scheduled jobs: importing this package registers every jobs module in scheduler.registry.JOBS."""

from scheduler import (  # noqa: F401
    classifier_jobs,
    consultation_jobs,
    menu_jobs,
    need_jobs,
    outbox_jobs,
    points_jobs,
    report_jobs,
    review_jobs,
)
