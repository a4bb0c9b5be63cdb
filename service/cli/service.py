"""``cleftscore serve``, ``status`` and ``config``."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from pipeline.vocabulary import NON_CLINICAL_LABEL


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("status")(status_command)
    app.command("config")(config_command)


def _config(**overrides):
    from service.config.settings import load_config

    return load_config(os.environ, overrides, options={"demo": "--demo", "port": "--port", "data_dir": "--data-dir"})


def serve_command(
    demo: Annotated[bool, typer.Option("--demo", help=f"Use the demo bundle (random weights); every output is labelled {NON_CLINICAL_LABEL}.")] = False,
    port: Annotated[int | None, typer.Option("--port", help="DICOM port (default $CLEFTSCORE_PORT or 11112).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data folder (default $CLEFTSCORE_DATA_DIR or ./data).")] = None,
) -> None:
    """Run the DICOM listener, scoring workers and result sender in one process until stopped (Ctrl-C or SIGTERM)."""
    import torch

    from service.runtime.app import start_service
    from service.runtime.logs import configure_logging

    config = _config(demo=demo or None, port=port, data_dir=data_dir)
    configure_logging(config.log_level)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.workers))
    service = start_service(config)
    stopped = threading.Event()

    def request_stop(signum, _frame) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    label = f" ({NON_CLINICAL_LABEL})" if config.demo else ""
    typer.echo(f"cleftscore listening as {config.ae_title} on port {service.port}{label}; data in {config.data_dir}",
               err=True)
    stopped.wait()
    service.stop()


def status_command(
    limit: Annotated[int, typer.Option("--limit", help="How many recent failures to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show job and transfer queues and the most recent failures."""
    from service.runtime.database import open_repository

    config = _config()
    repository = open_repository(config, migrate=False)
    try:
        counts = repository.queue_counts()
        failures = repository.recent_failures(limit)
    finally:
        repository.close()
    record = {
        "jobs": {state.value: n for state, n in counts.jobs.items()},
        "transfers": {state.value: n for state, n in counts.transfers.items()},
        "recent_failures": [{"kind": f.kind.value, "id": f.record_id, "error_code": f.error_code,
                             "reason": f.last_error, "attempts": f.attempts, "failed_at": f.failed_at.isoformat(),
                             "destination": f.destination} for f in failures],
    }
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    typer.echo("jobs:      " + "  ".join(f"{k} {v}" for k, v in record["jobs"].items()))
    typer.echo("transfers: " + "  ".join(f"{k} {v}" for k, v in record["transfers"].items()))
    if failures:
        typer.echo("recent failures:")
        for item in record["recent_failures"]:
            where = f" → {item['destination']}" if item["destination"] else ""
            typer.echo(f"  {item['failed_at']}  {item['kind']} {item['id']}{where}  [{item['error_code']}] {item['reason']}")


def config_command() -> None:
    """Print the validated configuration (passwords removed)."""
    typer.echo(json.dumps(_config().public_view(), indent=2))
