"""``cleftscore serve``: listener, workers and sender in one process.

Wiring only: every part takes its dependencies here, from one validated
:class:`~service.config.settings.ServiceConfig`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from db.sql import SqlRepository
from dicom.listener import DicomListener, build_listener
from dicom.network import ListenerConfig, TLSServerSettings
from dicom.storage import DicomFileStore
from pipeline.appraise import AppraisalSettings
from pipeline.errors import ModelError
from pipeline.models.bundle import ModelBundle, load_bundle
from pipeline.normalize.adaptation import AdaptationSettings
from pipeline.normalize.inversion import InversionSettings
from pipeline.normalize.schedules import NormalizationMode
from service.config.settings import ServiceConfig
from service.runtime.database import open_repository
from service.runtime.delivery import ResultSender
from service.runtime.intake import make_photo_recorder
from service.runtime.model_store import DEMO_BUNDLE, bundle_path, make_demo_bundle
from service.runtime.worker import AppraisalWorker

LOG = logging.getLogger("cleftscore.app")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def load_service_bundle(config: ServiceConfig, device: str) -> ModelBundle:
    """The configured bundle; with ``demo`` the demo bundle (made when missing)."""
    if config.demo:
        if not (config.models_dir / DEMO_BUNDLE / "manifest.json").is_file():
            make_demo_bundle(config.models_dir)
        return load_bundle(config.models_dir / DEMO_BUNDLE, device=device)
    try:
        folder = bundle_path(config.models_dir, config.bundle)
    except ModelError:
        raise ModelError(
            f"No clinical model bundle named {config.bundle!r} is installed in {config.models_dir}. Install one with "
            "`cleftscore models install --generator ffhq.pkl --lpips-backbone vgg16-397923af.pth --name "
            f"{config.bundle}`, or run `cleftscore serve --demo` for a demonstration (non-clinical)."
        ) from None
    bundle = load_bundle(folder, device=device)
    return bundle


def appraisal_settings(config: ServiceConfig, device: str) -> AppraisalSettings:
    return AppraisalSettings(
        inversion=InversionSettings(steps=config.inversion_steps),
        adaptation=AdaptationSettings(steps=config.adaptation_steps),
        device=device,
        mode=NormalizationMode(config.mode),
    )


def resolve_device(config: ServiceConfig) -> str:
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


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
    """Open the database, load the models, start listener, workers and sender."""
    from service.reports.assemble import make_report_pdf

    device = resolve_device(config)
    bundle = load_service_bundle(config, device)
    repository = open_repository(config)
    for folder in (config.store_dir, config.results_dir):
        folder.mkdir(parents=True, exist_ok=True)
    incoming = DicomFileStore(config.store_dir, reserve_bytes=config.storage_reserve_mb * 1024 * 1024)
    results = DicomFileStore(config.results_dir, reserve_bytes=0)
    tls = None
    if config.tls_certificate is not None:
        tls = TLSServerSettings(config.tls_certificate, config.tls_private_key, config.tls_client_ca)
    listener_config = ListenerConfig(
        ae_title=config.ae_title, port=config.port, bind_address=config.bind_address,
        allowed_calling_ae_titles=frozenset(config.allowed_aes) or None,
        allowed_peer_networks=tuple(config.allowed_addresses) or None, tls=tls, own_uid_root=config.uid_root,
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
            settings=appraisal_settings(config, device), result_store=results, destinations=destinations,
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
        "ae_title": config.ae_title, "port": listener.port, "workers": config.workers, "device": device,
        "bundle": bundle.identity.name, "model_identity": bundle.identity.identity,
        "non_clinical": bundle.identity.non_clinical, "destinations": ",".join(destinations),
    })
    return Service(config=config, repository=repository, listener=listener, stop_event=stop, threads=threads)
