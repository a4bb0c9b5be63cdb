"""Send one DICOM file to a configured destination with C-STORE.

``send_file`` never raises for network or peer problems: it returns a
``SendOutcome`` whose message says what happened, so the caller (the outbound
queue, whose state lives in SQL) can record it and retry with backoff.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, STORAGE_SERVICE_CLASS_STATUS, code_to_category

from dicom.addresses import Destination, validate_ae_title
from dicom.network import TLSClientSettings

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendOutcome:
    """Result of one send: ``status`` is the peer's C-STORE status, None if none came back."""

    success: bool
    status: int | None
    message: str


def send_file(
    path: Path | str,
    destination: Destination,
    calling_ae: str,
    timeout: float,
    tls: TLSClientSettings | None = None,
) -> SendOutcome:
    """C-STORE the DICOM file at ``path`` to ``destination`` over one association.

    Success means a status in pynetdicom's Success or Warning category (0x0000;
    0xB000, 0xB006, 0xB007 and the other warnings): the peer stored the object. ``timeout`` (seconds) bounds connecting, ACSE,
    DIMSE and network waits each.

    Raises:
        TypeError/ValueError: bad arguments (a programming error, not a network one).
    """
    if not isinstance(destination, Destination):
        raise TypeError(f"destination must be a Destination, got {type(destination).__name__}")
    calling_ae = validate_ae_title(calling_ae, what="calling AE title")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if tls is not None and not isinstance(tls, TLSClientSettings):
        raise TypeError(f"tls must be TLSClientSettings or None, got {type(tls).__name__}")
    path = Path(path)

    try:
        header = dcmread(path, stop_before_pixels=True)
        sop_class = UID(str(header.SOPClassUID))
        transfer_syntax = UID(str(header.file_meta.TransferSyntaxUID))
    except Exception as exc:
        return SendOutcome(False, None, f"cannot read {path}: {type(exc).__name__}: {exc}")

    syntaxes = [transfer_syntax]
    if not transfer_syntax.is_compressed and not transfer_syntax.is_deflated:
        syntaxes += [ts for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if ts != transfer_syntax]

    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    try:
        tls_args = (tls.ssl_context(), destination.host) if tls is not None else None
    except (OSError, ssl.SSLError, ValueError) as exc:
        return SendOutcome(False, None, f"TLS setup failed: {exc}")

    assoc = None
    try:
        assoc = ae.associate(
            destination.host,
            destination.port,
            contexts=[build_context(sop_class, syntaxes)],
            ae_title=destination.ae_title,
            tls_args=tls_args,
        )
        if assoc.is_rejected:
            return SendOutcome(False, None, f"association rejected by {destination}{_reject_reason(assoc)}")
        if not assoc.is_established and assoc.rejected_contexts:
            # pynetdicom aborts by itself when the peer accepts no context.
            return SendOutcome(
                False, None,
                f"{destination} accepted no presentation context for {sop_class.name} in {transfer_syntax.name}",
            )
        if assoc.is_aborted:
            return SendOutcome(False, None, f"association aborted by {destination}")
        if not assoc.is_established:
            return SendOutcome(False, None, f"could not associate with {destination} (no connection?)")
        response = assoc.send_c_store(path)
        if response is None or "Status" not in response:
            return SendOutcome(False, None, f"no valid C-STORE response from {destination} (timeout or abort)")
        status = int(response.Status)
        category = code_to_category(status)
        if category == STATUS_SUCCESS:
            return SendOutcome(True, status, f"stored by {destination}")
        detail = _status_detail(status, str(response.get("ErrorComment", "") or ""))
        if category == STATUS_WARNING:
            return SendOutcome(True, status, f"stored by {destination} with warning {detail}")
        return SendOutcome(False, status, f"{destination} refused with {detail}")
    except Exception as exc:  # network, TLS, encoding: report, never raise
        LOGGER.warning("sending %s to %s failed: %s", path, destination, exc)
        return SendOutcome(False, None, f"sending to {destination} failed: {type(exc).__name__}: {exc}")
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()


def _reject_reason(assoc) -> str:
    """``": called AE title not recognised"``: pynetdicom's wording of the A-ASSOCIATE-RJ reason."""
    primitive = assoc.acceptor.primitive
    if getattr(primitive, "result_source", None) is None or getattr(primitive, "diagnostic", None) is None:
        return ""
    reason = primitive.reason_str
    return f": {reason[:1].lower()}{reason[1:]}"


def _status_detail(status: int, comment: str) -> str:
    """``0xA700 (Refused: Out of Resources) comment``: the code, pynetdicom's Storage
    Service Class meaning when it knows one, and the peer's Error Comment."""
    known = STORAGE_SERVICE_CLASS_STATUS.get(status)
    meaning = f" ({known[1]})" if known and known[1] else ""
    return f"0x{status:04X}{meaning} {comment}".rstrip()
