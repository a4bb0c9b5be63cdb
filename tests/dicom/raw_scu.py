"""A test SCU that sends data set bytes exactly as given (damaged ones too) and collects the answers.

pynetdicom's ``send_c_store`` decodes and re-encodes what it sends and always fills in the
Affected SOP Instance UID; here the C-STORE request primitive is built by hand, its data set is
the case's bytes, and responses are taken from the EVT_DIMSE_RECV notification (public API
only). No tests here.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterable

from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification

NO_CONTEXT = "negotiation"  #: outcome when the listener accepted no presentation context for the case
NO_ANSWER = "no answer"  #: outcome when no response came within the timeout
ABORTED = "aborted"  #: outcome when the association ended before the response


class RawStoreSCU:
    """One association to ``port`` proposing every (SOP class, transfer syntax) pair in ``contexts``."""

    def __init__(self, port: int, contexts: Iterable[tuple[str, str]], *, called_ae: str = "CLEFTSCORE",
                 calling_ae: str = "MALFORMED", timeout_s: float = 30.0) -> None:
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # the SCU side's own complaints are noise here
        self.timeout_s = timeout_s
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
        ae.add_requested_context(Verification)
        for sop_class, syntax in dict.fromkeys(contexts):
            ae.add_requested_context(sop_class, syntax)
        self._responses: dict[int, int] = {}
        self._arrived = threading.Condition()
        self._message_id = 0
        self.assoc = ae.associate("127.0.0.1", port, ae_title=called_ae,
                                  evt_handlers=[(evt.EVT_DIMSE_RECV, self._received)])
        if not self.assoc.is_established:
            raise ConnectionError(f"association to port {port} was not established")

    def _received(self, event: evt.Event) -> None:
        command = event.message.command_set
        if command is not None and command.get("CommandField") == 0x8001:  # C-STORE-RSP
            with self._arrived:
                self._responses[int(command.MessageIDBeingRespondedTo)] = int(command.Status)
                self._arrived.notify_all()

    def context_id(self, sop_class: str, syntax: str) -> int | None:
        for context in self.assoc.accepted_contexts:
            if context.abstract_syntax == sop_class and syntax in context.transfer_syntax:
                return context.context_id
        return None

    def store(self, data: bytes, sop_class: str, syntax: str, affected_uid: str | None) -> int | str:
        """Send one C-STORE; returns the response status, or one of NO_CONTEXT, NO_ANSWER, ABORTED."""
        context_id = self.context_id(sop_class, syntax)
        if context_id is None:
            return NO_CONTEXT
        if not self.assoc.is_established:
            return ABORTED
        self._message_id = (self._message_id + 1) % 65536
        request = C_STORE()
        request.MessageID, request.Priority = self._message_id, 2
        request.AffectedSOPClassUID = sop_class
        if affected_uid is not None:
            request.AffectedSOPInstanceUID = affected_uid
        request.DataSet = io.BytesIO(data)
        self.assoc.dimse.send_msg(request, context_id)
        with self._arrived:
            self._arrived.wait_for(lambda: self._message_id in self._responses or not self.assoc.is_established,
                                   timeout=self.timeout_s)
            status = self._responses.pop(self._message_id, None)
        self._drain_queue()
        if status is not None:
            return status
        return NO_ANSWER if self.assoc.is_established else ABORTED

    def _drain_queue(self) -> None:
        """pynetdicom also queues every C-STORE response for its own ``send_*`` calls; this client reads
        them from the notification instead, so drop them, or the next C-ECHO would take a stale one."""
        while self.assoc.dimse.get_msg(block=False) != (None, None):
            pass

    def echo(self) -> int | None:
        status = self.assoc.send_c_echo()
        return int(status.Status) if status and "Status" in status else None

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()
