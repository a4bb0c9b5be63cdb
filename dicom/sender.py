"""Send one DICOM file to a configured destination with C-STORE.

``send_file`` never raises for network or peer problems: it returns a
``SendOutcome`` whose message says what happened, so the caller (the outbound
queue, whose state lives in SQL) can record it and retry with backoff.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context

from dicom.network import TLSClientSettings, validate_ae_title

LOGGER = logging.getLogger(__name__)

#: C-STORE warning statuses: the object was stored (with coercion or discarded elements).
_WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})

_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


@dataclass(frozen=True)
class Destination:
    """A C-STORE SCP: called AE title, host name or IP address, TCP port."""

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title, what="destination AE title"))
        if not isinstance(self.host, str) or not _is_host(self.host):
            raise ValueError(f"destination host {self.host!r} is not a host name or IP address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"destination port must be an int in 1..65535, got {self.port!r}")

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``"AE@host:port"``; IPv6 hosts in brackets: ``"AE@[::1]:104"``."""
        if not isinstance(text, str):
            raise TypeError(f"destination must be a str, got {type(text).__name__}")
        ae_title, sep, address = text.strip().rpartition("@")
        if not sep:
            raise ValueError(f"destination {text!r} is not of the form AE@host:port")
        host, sep, port_text = address.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"destination {text!r} has no numeric port (AE@host:port)")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"destination {text!r}: put an IPv6 address in brackets, AE@[::1]:104")
        return cls(ae_title=ae_title, host=host, port=int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None


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

    Success means status 0x0000 or a C-STORE warning (0xB000, 0xB006, 0xB007):
    the peer stored the object. ``timeout`` (seconds) bounds connecting, ACSE,
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
        comment = str(response.get("ErrorComment", "") or "")
        if status == 0x0000:
            return SendOutcome(True, status, f"stored by {destination}")
        if status in _WARNING_STATUSES:
            return SendOutcome(True, status, f"stored by {destination} with warning 0x{status:04X} {comment}".rstrip())
        return SendOutcome(False, status, f"{destination} refused with 0x{status:04X} {comment}".rstrip())
    except Exception as exc:  # network, TLS, encoding: report, never raise
        LOGGER.warning("sending %s to %s failed: %s", path, destination, exc)
        return SendOutcome(False, None, f"sending to {destination} failed: {type(exc).__name__}: {exc}")
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()


_REJECT_REASONS = {
    (0x01, 0x02): "application context not supported",
    (0x01, 0x03): "calling AE title not recognised",
    (0x01, 0x07): "called AE title not recognised",
    (0x02, 0x02): "protocol version not supported",
    (0x03, 0x01): "temporary congestion",
    (0x03, 0x02): "local limit exceeded",
}


def _reject_reason(assoc) -> str:
    primitive = assoc.acceptor.primitive
    source, diagnostic = getattr(primitive, "result_source", None), getattr(primitive, "diagnostic", None)
    if source is None or diagnostic is None:
        return ""
    reason = _REJECT_REASONS.get((int(source), int(diagnostic)), "no reason given")
    return f": {reason}"
