"""The DICOM listener: C-ECHO and C-STORE of photographs, with AE/IP allow-lists and TLS.

Intake contract ("nothing acknowledged is lost"): a C-STORE is answered 0x0000
only after the encoded dataset is on disk (fsynced, via the bound store) and the
bound ``on_photo`` consumer has returned (it commits the database rows).
``on_photo`` runs on the association's thread and must be quick and
thread-safe: record the photo and enqueue a job, never score.

Objects that are stored even though they cannot be appraised — no PatientID,
corrupt or missing pixel data, our own results routed back by a PACS
(``ListenerConfig.own_uid_root``) — are acknowledged with 0x0000 and reach
``on_photo`` with the problem listed in ``ReceivedPhoto.intake_problems``; the
consumer records an explained failure for them. Only objects that cannot be
stored safely are refused. C-STORE response statuses (Error Comment carries the
reason):

======  ==================================================================
0x0000  stored and recorded
0xA700  out of resources: storage reserve reached or disk full (sender retries)
0xA900  data set's SOP Class UID differs from the one in the C-STORE request
0xC001  data set could not be parsed
0xC002  SOP Instance UID missing, malformed, or differs from the request's
0xC003  Study or Series Instance UID missing or malformed
0xC004  file could not be written (I/O error other than a full disk)
0xC005  the consumer failed to record the photo (file stays on disk; a re-send
        is idempotent)
0xC006  encapsulated Pixel Data not encoded as the transfer syntax requires
        (e.g. an explicit length; dcmtk's storescp refuses these too)
======  ==================================================================

A C-STORE request that pynetdicom cannot serve because its command lacks a
required field (Affected SOP Instance UID, Affected SOP Class UID, Priority, or
its data set) would otherwise get no answer at all; ``handle_invalid_request``
answers it with 0xC002 (no SOP Instance UID) or 0xC001 (anything else missing).
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from db.timeutil import utc_now
from dicom.network import ListenerConfig, TLSServerSettings, peer_is_allowed

__all__ = [  # ListenerConfig and TLSServerSettings live in dicom.network; re-exported here
    "ACCEPTED_SOP_CLASSES", "ACCEPTED_TRANSFER_SYNTAXES", "DicomListener", "ListenerConfig",
    "PhotoStore", "ReceivedPhoto", "TLSServerSettings", "build_listener", "handle_association_request",
    "handle_invalid_request", "handle_store", "peer_is_allowed",
]
from dicom.photo import PhotoContext, extract_context
from dicom.pixel_checks import encapsulation_problem
from dicom.storage import InsufficientStorageError, StoredFile, StoreOutcome, sanitise_uid

LOGGER = logging.getLogger(__name__)

VL_PHOTOGRAPHIC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_TRUE_COLOR_SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7.4"

#: SOP classes accepted for C-STORE; any other is refused at negotiation.
ACCEPTED_SOP_CLASSES: tuple[str, ...] = (
    VL_PHOTOGRAPHIC_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    MULTIFRAME_TRUE_COLOR_SC_IMAGE_STORAGE,
)

#: Transfer syntaxes accepted, each checked to decode with the installed pydicom
#: plugins (Pillow, pylibjpeg-libjpeg, pyjpegls). Not accepted: JPEG progressive
#: (no decoder), HTJ2K (no openjpeg plugin), big endian (retired), video.
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_SOP_CLASS_MISMATCH = 0xA900
STATUS_UNPARSEABLE_DATASET = 0xC001
STATUS_BAD_SOP_INSTANCE_UID = 0xC002
STATUS_BAD_STUDY_OR_SERIES_UID = 0xC003
STATUS_STORAGE_FAILED = 0xC004
STATUS_CONSUMER_FAILED = 0xC005
STATUS_BAD_PIXEL_ENCODING = 0xC006


@dataclass(frozen=True)
class ReceivedPhoto:
    """A stored photograph, handed to the consumer before the sender is answered."""

    path: Path
    sha256: str
    size_bytes: int
    outcome: StoreOutcome  #: CREATED, UNCHANGED (duplicate delivery) or REPLACED.
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    context: PhotoContext
    calling_ae_title: str
    peer_address: str
    received_at: dt.datetime  #: Timezone-aware.
    #: Reasons the photo cannot be appraised that are visible at intake (e.g. no
    #: PatientID); empty when none. The consumer records a failed job for them.
    intake_problems: tuple[str, ...] = ()


class PhotoStore(Protocol):
    """What the listener needs from storage (``dicom.storage.DicomFileStore`` fits)."""

    def store(
        self, study_uid: str, series_uid: str, sop_instance_uid: str, data: bytes
    ) -> StoredFile: ...


# -------------------------------------------------------------------------- handlers


def handle_association_request(event: evt.Event, config: ListenerConfig) -> None:
    """EVT_REQUESTED: reject callers not on the AE-title or address allow-lists (A-ASSOCIATE-RJ).

    Also puts :func:`handle_invalid_request` first among the association's EVT_DIMSE_RECV
    handlers: pynetdicom runs a notification's handlers in one ``try``, and its own logging
    handler raises on a C-STORE without Affected SOP Instance UID, which would skip ours.
    """
    assoc = event.assoc
    _answer_invalid_requests_first(assoc)
    calling = _calling_ae_title(assoc)
    address = str(assoc.requestor.address)
    if config.allowed_calling_ae_titles is not None and calling not in config.allowed_calling_ae_titles:
        LOGGER.warning("rejecting association from %s: calling AE %r not allowed", address, calling)
        _reject(assoc, diagnostic=0x03)  # calling AE title not recognised
    elif not peer_is_allowed(address, config.allowed_peer_networks):
        LOGGER.warning("rejecting association from %s (AE %r): address not allowed", address, calling)
        _reject(assoc, diagnostic=0x01)  # no reason given


def _answer_invalid_requests_first(assoc) -> None:
    others = [(func, args) for func, args in assoc.get_handlers(evt.EVT_DIMSE_RECV)
              if func is not handle_invalid_request]
    for func, _ in list(assoc.get_handlers(evt.EVT_DIMSE_RECV)):
        assoc.unbind(evt.EVT_DIMSE_RECV, func)
    assoc.bind(evt.EVT_DIMSE_RECV, handle_invalid_request)
    for func, args in others:
        assoc.bind(evt.EVT_DIMSE_RECV, _tolerant(func), args or None)


def _tolerant(handler: Callable) -> Callable:
    """``handler`` (someone else's EVT_DIMSE_RECV handler) with its failures on malformed messages
    logged as one warning instead of an error with a traceback."""

    def call(event: evt.Event, *args) -> None:
        try:
            handler(event, *args)
        except Exception as exc:  # noqa: BLE001 - a logging handler tripping over a malformed message
            LOGGER.warning("EVT_DIMSE_RECV handler %s failed on a malformed message: %s",
                           getattr(handler, "__name__", "?"), type(exc).__name__)

    call.__name__ = f"tolerant_{getattr(handler, '__name__', 'handler')}"
    return call


def _reject(assoc, *, diagnostic: int) -> None:
    # rejected-permanent (1), by the DUL service-user (1); kill() lets the DUL
    # flush the A-ASSOCIATE-RJ before the socket closes, as pynetdicom does itself.
    assoc.acse.send_reject(0x01, 0x01, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def _calling_ae_title(assoc) -> str:
    """The requestor's AE title; set from the A-ASSOCIATE-RQ primitive before negotiation ends."""
    title = assoc.requestor.ae_title
    if not title and assoc.requestor.primitive is not None:
        title = assoc.requestor.primitive.calling_ae_title
    return (title or "").strip()


def handle_store(
    event: evt.Event,
    config: ListenerConfig,
    store: PhotoStore,
    on_photo: Callable[[ReceivedPhoto], None],
    clock: Callable[[], dt.datetime],
) -> Dataset:
    """EVT_C_STORE: store the data set, hand it to ``on_photo``, answer (see module docstring)."""
    calling = _calling_ae_title(event.assoc)
    peer = str(event.assoc.requestor.address)
    try:
        ds = event.dataset
        ds.file_meta = event.file_meta
        sop_class_uid = str(ds.SOPClassUID)
    except Exception as exc:
        return _failure(STATUS_UNPARSEABLE_DATASET, "data set could not be parsed", exc, calling)

    requested_class = str(event.request.AffectedSOPClassUID)
    if sop_class_uid != requested_class:
        return _failure(
            STATUS_SOP_CLASS_MISMATCH,
            f"SOP Class UID {sop_class_uid} != request {requested_class}", None, calling,
        )
    try:
        sop_uid = sanitise_uid(str(ds.get("SOPInstanceUID", "")), what="SOP Instance UID")
        requested_uid = sanitise_uid(str(event.request.AffectedSOPInstanceUID), what="Affected SOP Instance UID")
        if sop_uid != requested_uid:
            raise ValueError(f"SOP Instance UID {sop_uid} differs from the request's {requested_uid}")
    except Exception as exc:  # includes elements that fail to decode lazily
        return _failure(STATUS_BAD_SOP_INSTANCE_UID, "bad SOP Instance UID", exc, calling)
    try:
        study_uid = sanitise_uid(str(ds.get("StudyInstanceUID", "")), what="Study Instance UID")
        series_uid = sanitise_uid(str(ds.get("SeriesInstanceUID", "")), what="Series Instance UID")
    except Exception as exc:
        return _failure(STATUS_BAD_STUDY_OR_SERIES_UID, "bad Study/Series Instance UID", exc, calling)
    problem = encapsulation_problem(ds)
    if problem is not None:
        return _failure(STATUS_BAD_PIXEL_ENCODING, problem, None, calling)

    try:
        stored = store.store(study_uid, series_uid, sop_uid, event.encoded_dataset())
    except InsufficientStorageError as exc:
        return _failure(STATUS_OUT_OF_RESOURCES, "storage reserve reached", exc, calling)
    except Exception as exc:
        return _failure(STATUS_STORAGE_FAILED, "file could not be written", exc, calling)

    context = extract_context(ds, local_timezone=config.local_timezone)
    problems = tuple(_intake_problems(ds, context, config.own_uid_root))
    photo = ReceivedPhoto(
        path=stored.path,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        outcome=stored.outcome,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_uid,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        transfer_syntax_uid=str(event.context.transfer_syntax),
        context=context,
        calling_ae_title=calling,
        peer_address=peer,
        received_at=clock(),
        intake_problems=problems,
    )
    try:
        on_photo(photo)
    except Exception as exc:
        return _failure(STATUS_CONSUMER_FAILED, "photo could not be recorded", exc, calling)
    LOGGER.info("stored %s from %s (%s) as %s [%s]", sop_uid, calling, peer, stored.path, stored.outcome.value)
    status = Dataset()
    status.Status = STATUS_SUCCESS
    return status


def _intake_problems(ds: Dataset, context: PhotoContext, own_uid_root: str | None) -> Iterable[str]:
    if own_uid_root is not None and str(context.sop_instance_uid or "").startswith(own_uid_root):
        yield f"this object is a result made by this service (UID under {own_uid_root}), not a photo"
    if context.patient_id_problem is not None:
        yield context.patient_id_problem
    elif context.patient.patient_id is None:
        yield "the photo has no Patient ID (0010,0020), so it cannot be linked to a patient"
    if "PixelData" not in ds:
        yield "the photo has no Pixel Data (7FE0,0010)"


_STORE_COMMAND_FIELDS = ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority")


def handle_invalid_request(event: evt.Event) -> None:
    """EVT_DIMSE_RECV: answer a C-STORE request that pynetdicom will drop as invalid.

    pynetdicom's association serves only requests whose required command fields are all
    present (``is_valid_request``) and silently ignores the rest, so the sender would
    wait for its timeout. Here such a request gets a failure response at once.
    A request without a Message ID cannot be answered (the response must name it).
    """
    message = event.message
    command = message.command_set
    if command is None or command.get("CommandField") != 0x0001:  # C-STORE-RQ
        return
    complete = all(command.get(k) not in (None, "") for k in _STORE_COMMAND_FIELDS)
    if complete and command.get("CommandDataSetType") != 0x0101:
        return  # the usual case: complete (pynetdicom serves it)
    try:
        request = message.message_to_primitive()
    except Exception:  # noqa: BLE001 - undecodable command: pynetdicom aborts the association itself
        return
    if not isinstance(request, C_STORE) or request.is_valid_request or request.MessageID is None:
        return
    missing = [keyword for keyword in C_STORE.REQUEST_KEYWORDS if getattr(request, keyword) is None]
    status = STATUS_BAD_SOP_INSTANCE_UID if "AffectedSOPInstanceUID" in missing else STATUS_UNPARSEABLE_DATASET
    response = C_STORE()
    response.MessageIDBeingRespondedTo = request.MessageID
    response.AffectedSOPClassUID = request.AffectedSOPClassUID
    response.Status = status
    response.ErrorComment = _error_comment(f"C-STORE request without {', '.join(missing)}")
    LOGGER.warning("C-STORE request refused with 0x%04X: it lacks %s", status, ", ".join(missing),
                   extra={"calling_ae": _calling_ae_title(event.assoc)})
    event.assoc.dimse.send_msg(response, message.context_id)


_UNEXPECTED_FAILURES = frozenset({STATUS_STORAGE_FAILED, STATUS_CONSUMER_FAILED})


def _failure(status_code: int, summary: str, exc: BaseException | None, calling: str) -> Dataset:
    detail = f"{summary}: {exc}" if exc is not None else summary
    unexpected = status_code in _UNEXPECTED_FAILURES
    # Refusing malformed input is routine (WARNING, no traceback); a failure to store or record is not.
    LOGGER.log(logging.ERROR if unexpected else logging.WARNING,
               "C-STORE from %r refused with 0x%04X: %s", calling, status_code, detail,
               exc_info=exc if unexpected else None)
    status = Dataset()
    status.Status = status_code
    status.ErrorComment = _error_comment(detail)
    return status


def _error_comment(text: str) -> str:
    """Error Comment is LO: at most 64 characters of the default repertoire, no backslash."""
    return "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)[:64]


# -------------------------------------------------------------------------- server


class _HandshakeInWorkerServer(ThreadedAssociationServer):
    """Runs the TLS handshake on the connection's own thread, with a timeout.

    pynetdicom's server handshakes inside ``accept``'s thread, so one silent
    client could stall every other connection; here the accept loop never waits.
    """

    handshake_timeout_s: float = 30.0

    def get_request(self):  # type: ignore[override]
        client_socket, address = self.socket.accept()
        if self.ssl_context:
            client_socket = self.ssl_context.wrap_socket(
                client_socket, server_side=True, do_handshake_on_connect=False
            )
        return client_socket, address

    def process_request_thread(self, request, client_address):  # type: ignore[override]
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(self.handshake_timeout_s)
                request.do_handshake()
                request.settimeout(None)
            except (OSError, ValueError) as exc:
                LOGGER.warning("TLS handshake with %s failed: %s", client_address, exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


class DicomListener:
    """A configured, not yet started listener; ``start()`` serves on a background thread."""

    def __init__(self, ae: AE, config: ListenerConfig, handlers: list) -> None:
        self._ae = ae
        self._config = config
        self._handlers = handlers
        self._server: _HandshakeInWorkerServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def ae(self) -> AE:
        return self._ae

    @property
    def config(self) -> ListenerConfig:
        return self._config

    @property
    def port(self) -> int:
        """The bound port (useful when the config asked for port 0)."""
        if self._server is None:
            raise RuntimeError("listener is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("listener already started")
        ssl_context = self._config.tls.ssl_context() if self._config.tls is not None else None
        server = self._ae.make_server(
            (self._config.bind_address, self._config.port),
            ae_title=self._config.ae_title,
            ssl_context=ssl_context,
            evt_handlers=self._handlers,
            server_class=_HandshakeInWorkerServer,
        )
        server.handshake_timeout_s = self._config.acse_timeout_s
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long stop() waits for the accept loop
            name=f"dicom-listener-{self._config.ae_title}",
            daemon=True,
        )
        self._ae._servers.append(server)  # so AE.shutdown() also stops it
        thread.start()
        self._server, self._thread = server, thread
        LOGGER.info("DICOM listener %s on %s:%d (TLS %s)", self._config.ae_title,
                    self._config.bind_address, self.port, "on" if ssl_context else "off")

    def stop(self) -> None:
        """Stop accepting, close the socket and wait for the serving thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()  # also removes it from the AE's server list
        for assoc in list(server.active_associations):
            assoc.abort()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> DicomListener:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def build_listener(
    config: ListenerConfig,
    store: PhotoStore,
    on_photo: Callable[[ReceivedPhoto], None],
    *,
    clock: Callable[[], dt.datetime] = utc_now,
) -> DicomListener:
    """Configure an AE for photo intake; nothing listens until ``start()``."""
    if not isinstance(config, ListenerConfig):
        raise TypeError(f"config must be a ListenerConfig, got {type(config).__name__}")
    if not callable(on_photo):
        raise TypeError(f"on_photo must be callable, got {on_photo!r}")
    if not callable(getattr(store, "store", None)):
        raise TypeError(f"store must have a store(study, series, sop, data) method, got {store!r}")

    ae = AE(ae_title=config.ae_title)
    ae.acse_timeout = config.acse_timeout_s
    ae.dimse_timeout = config.dimse_timeout_s
    ae.network_timeout = config.network_timeout_s
    ae.maximum_associations = config.maximum_associations
    ae.require_called_aet = True
    ae.add_supported_context(Verification)
    for sop_class in ACCEPTED_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(ACCEPTED_TRANSFER_SYNTAXES))

    handlers = [
        (evt.EVT_REQUESTED, handle_association_request, [config]),
        (evt.EVT_C_STORE, handle_store, [config, store, on_photo, clock]),
        (evt.EVT_DIMSE_RECV, handle_invalid_request),
    ]
    return DicomListener(ae, config, handlers)
