"""``cleftscore serve``: listener, workers and sender in one process.

Wiring only: every part takes its dependencies here, from one validated
:class:`~service.config.settings.ServiceConfig`.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from db.sql import SqlRepository
from db.timeutil import utc_now
from dicom.listener import DicomListener, build_listener
from dicom.network import ListenerConfig
from dicom.storage import DicomFileStore
from service.config.appraisal import settings_from
from service.config.settings import ServiceConfig
from service.runtime.database import open_repository
from service.runtime.delivery import ResultSender
from service.runtime.intake import make_photo_recorder
from service.runtime.model_store import open_bundle
from service.runtime.worker import AppraisalWorker

LOG = logging.getLogger("cleftscore.app")


@dataclass
class Service:
    """A running service; :meth:`stop` shuts every part down."""

    config: ServiceConfig
    repository: SqlRepository
    listener: DicomListener
    stop_event: threading.Event
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.listener.port

    def stop(self) -> None:
        self.stop_event.set()
        self.listener.stop()
        for thread in self.threads:
            thread.join(timeout=60)
        self.repository.close()
        LOG.info("service stopped")


def start_service(config: ServiceConfig) -> Service:
    """Load the models, open the database, start listener, workers and sender."""
    from service.reports.assemble import make_report_pdf

    settings = settings_from(config)
    device = settings.device
    bundle = open_bundle(config.models_dir, config.bundle, demo=config.demo, device=device)
    repository = open_repository(config)
    for folder in (config.store_dir, config.results_dir):
        folder.mkdir(parents=True, exist_ok=True)
    incoming = DicomFileStore(config.store_dir, reserve_bytes=config.storage_reserve_mb * 1024 * 1024)
    results = DicomFileStore(config.results_dir, reserve_bytes=0)
    listener_config = ListenerConfig(
        ae_title=config.ae_title, port=config.port, bind_address=config.bind_address,
        allowed_calling_ae_titles=frozenset(config.allowed_aes) or None,
        allowed_peer_networks=config.allowed_addresses or None, tls=config.tls_server(), own_uid_root=config.uid_root,
        local_timezone=config.local_timezone(),
    )
    listener = build_listener(listener_config, incoming, make_photo_recorder(repository))
    stop = threading.Event()
    host = socket.gethostname()
    destinations = [str(d) for d in config.destinations]
    threads = []
    for index in range(config.workers):
        worker = AppraisalWorker(
            worker_id=f"{host}:{os.getpid()}:worker{index}", repository=repository, bundle=bundle,
            settings=settings, result_store=results, destinations=destinations,
            uid_root=config.uid_root, make_pdf=functools.partial(make_report_pdf, repository, local_timezone=config.local_timezone()),
            lease_s=config.job_lease_s, clock=utc_now,
        )
        threads.append(threading.Thread(target=worker.run, args=(stop,), name=f"worker{index}", daemon=True))
    sender = ResultSender(sender_id=f"{host}:{os.getpid()}:sender", repository=repository,
                         calling_ae=config.ae_title, clock=utc_now)
    threads.append(threading.Thread(target=sender.run, args=(stop,), name="sender", daemon=True))
    listener.start()
    for thread in threads:
        thread.start()
    LOG.info("service started", extra={
        "ae_title": config.ae_title, "port": listener.port, "workers": config.workers, "device": device, "mode": config.mode,
        "bundle": bundle.identity.name, "model_identity": bundle.identity.identity,
        "non_clinical": bundle.identity.non_clinical, "destinations": ",".join(destinations),
    })
    return Service(config=config, repository=repository, listener=listener, stop_event=stop, threads=threads)
