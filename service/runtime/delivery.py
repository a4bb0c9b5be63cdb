"""The sender: deliver filed results to their destinations by C-STORE.

Each transfer is a row; a failed send is retried with exponential backoff (the
repository's transfer retry policy) until it succeeds or runs out of attempts,
so a destination that is down for a while gets everything later, and a restart
resumes where the rows say.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from db.repository import Repository
from dicom.addresses import Destination
from dicom.network import TLSClientSettings
from dicom.sender import send_file

LOG = logging.getLogger("cleftscore.sender")


class ResultSender:
    def __init__(self, *, sender_id: str, repository: Repository, calling_ae: str, timeout_s: float = 30.0,
                 tls: TLSClientSettings | None = None, lease_s: float = 300.0,
                 clock: Callable[[], dt.datetime]) -> None:
        self.sender_id = sender_id
        self.repository = repository
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s
        self.tls = tls
        self.lease_s = lease_s
        self.clock = clock

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # noqa: BLE001 - keep delivering; the row is retried later
                LOG.exception("sender loop error", extra={"sender": self.sender_id})
                worked = False
            if not worked:
                stop.wait(idle_s)

    def run_once(self) -> bool:
        """Claim one due transfer and try it; False when none was due."""
        transfer = self.repository.claim_transfer(self.sender_id, self.lease_s, now=self.clock())
        if transfer is None:
            return False
        result = self.repository.get_result_object(transfer.result_object_id)
        ids = {"transfer_id": transfer.id, "result_id": result.id, "sop_uid": result.sop_instance_uid,
               "destination": transfer.destination, "attempt": transfer.attempts}
        try:
            destination = Destination.parse(transfer.destination)
        except ValueError as error:
            self.repository.fail_transfer(transfer.id, self.sender_id, error_code="bad_destination",
                                          message=str(error), retryable=False, now=self.clock())
            LOG.error("transfer refused: bad destination", extra=ids)
            return True
        outcome = send_file(result.file_path, destination, self.calling_ae, self.timeout_s, tls=self.tls)
        if outcome.success:
            self.repository.complete_transfer(transfer.id, self.sender_id, now=self.clock())
            LOG.info("result delivered", extra=ids)
        else:
            code = f"status_0x{outcome.status:04X}" if outcome.status is not None else "no_association"
            updated = self.repository.fail_transfer(transfer.id, self.sender_id, error_code=code,
                                                    message=outcome.message, retryable=True, now=self.clock())
            LOG.warning("delivery failed; will retry" if updated.state.value != "failed" else "delivery failed for good",
                        extra={**ids, "error_code": code, "next_attempt_at": updated.next_attempt_at.isoformat()})
        return True
