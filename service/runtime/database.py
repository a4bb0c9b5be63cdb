"""Opening the service's database (no torch import: quick for status commands)."""

from __future__ import annotations

from db.migrate import is_up_to_date, upgrade
from db.rules import RetryPolicy
from db.sql import SqlRepository
from pipeline.errors import PipelineError
from service.config.settings import ServiceConfig, redact_url


class DatabaseNotReadyError(PipelineError):
    code = "database_not_ready"


def open_repository(config: ServiceConfig, *, migrate: bool = True) -> SqlRepository:
    """The repository; with ``migrate`` the schema is brought up to date first, without
    it an uninitialised or outdated database is refused (read-only commands)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    url = config.effective_database_url
    if migrate:
        upgrade(url)
    elif not is_up_to_date(url):
        raise DatabaseNotReadyError(
            f"The database {redact_url(url)} is not initialised or not up to date; start `cleftscore serve` once."
        )
    return SqlRepository.from_url(
        url,
        job_retry=RetryPolicy(max_attempts=config.job_max_attempts, base_delay_s=10.0, max_delay_s=600.0),
        transfer_retry=RetryPolicy(max_attempts=config.send_max_attempts, base_delay_s=config.send_backoff_initial_s,
                                   max_delay_s=config.send_backoff_max_s),
    )
