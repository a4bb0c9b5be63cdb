"""A pynetdicom Storage SCP for tests that need a real peer on an address dcmtk's storescp
cannot listen on (IPv6 ``::1``), answering each C-STORE with a chosen status. No tests here."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt


@dataclass
class StorageSCP:
    """Received datasets in ``received``; ``status`` is the answer to the next C-STOREs."""

    ae_title: str
    host: str
    port: int = 0
    status: int = 0x0000
    received: list[Dataset] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def destination(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"

    def handle_store(self, event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        with self.arrived:
            self.received.append(dataset)
            self.arrived.notify_all()
        return self.status

    def wait_for(self, count: int, timeout: float) -> list[Dataset]:
        """The first ``count`` datasets, waiting up to ``timeout`` seconds for them."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout=timeout)
            return list(self.received)


@contextlib.contextmanager
def storage_scp(ae_title: str = "STORE", host: str = "::1") -> Iterator[StorageSCP]:
    """A Storage SCP accepting every storage SOP class, listening on ``host`` (a free port)."""
    scp = StorageSCP(ae_title, host)
    ae = AE(ae_title=ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server((host, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, scp.handle_store)])
    scp.port = int(server.server_address[1])
    try:
        yield scp
    finally:
        server.shutdown()


def ipv6_loopback_available() -> bool:
    """Whether this machine can listen on ``::1``."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False
