"""Network settings: AE titles, TLS contexts, peer allow-lists, the listener's configuration."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dicom.addresses import validate_ae_title
from dicom.uids import validate_uid_root


@dataclass(frozen=True)
class TLSServerSettings:
    """Server side of DICOM TLS (PS3.15 B.1); PEM files."""

    certificate_file: Path
    private_key_file: Path
    #: When set, clients must present a certificate issued by one of these CAs.
    client_ca_file: Path | None = None

    def __post_init__(self) -> None:
        for name in ("certificate_file", "private_key_file", "client_ca_file"):
            value = getattr(self, name)
            if value is None and name == "client_ca_file":
                continue
            path = Path(value)
            if not path.is_file():
                raise ValueError(f"TLS {name} {str(path)!r} is not a readable file")
            object.__setattr__(self, name, path)
        _check_loads(self)

    def ssl_context(self) -> ssl.SSLContext:
        """A server context: TLS 1.2 or newer, client certificates required iff a CA is set."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate_file, self.private_key_file)
        if self.client_ca_file is not None:
            context.load_verify_locations(cafile=str(self.client_ca_file))
            context.verify_mode = ssl.CERT_REQUIRED
        else:
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True)
class TLSClientSettings:
    """Client side of DICOM TLS; PEM files. The server must present a certificate from ``ca_file``."""

    ca_file: Path
    certificate_file: Path | None = None  #: Our certificate, for servers that require one.
    private_key_file: Path | None = None
    #: Check the server certificate names the host we dial (off for IP-only PACS certificates).
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if (self.certificate_file is None) != (self.private_key_file is None):
            raise ValueError("certificate_file and private_key_file must be given together")
        for name in ("ca_file", "certificate_file", "private_key_file"):
            value = getattr(self, name)
            if value is None:
                continue
            path = Path(value)
            if not path.is_file():
                raise ValueError(f"TLS {name} {str(path)!r} is not a readable file")
            object.__setattr__(self, name, path)
        _check_loads(self)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: TLS 1.2 or newer, server certificate verified against ``ca_file``."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = self.check_hostname
        if self.certificate_file is not None:
            context.load_cert_chain(self.certificate_file, self.private_key_file)
        return context


def _check_loads(settings: TLSServerSettings | TLSClientSettings) -> None:
    """Fail at configuration time, not at the first connection, if the PEM files are unusable."""
    try:
        settings.ssl_context()
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"TLS files of {settings!r} cannot be loaded: {exc}") from exc


def parse_network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IP network from "10.0.0.0/8" or a single address ("10.1.2.3" is a /32)."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError as exc:
        raise ValueError(f"allowed peer network {value!r} is not an IP address or network") from exc


def peer_is_allowed(
    address: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] | None
) -> bool:
    """True if ``address`` lies in one of ``networks`` (None allows all)."""
    if networks is None:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


@dataclass(frozen=True)
class ListenerConfig:
    """Where and whom the listener serves. Validated on construction."""

    ae_title: str
    port: int  #: 0 picks a free port (tests); see ``DicomListener.port``.
    #: Calling AE titles allowed to associate; None allows any (explicit opt-in).
    allowed_calling_ae_titles: frozenset[str] | None
    bind_address: str = "0.0.0.0"
    #: Peer IP addresses or networks ("10.1.0.0/16"); None allows any address.
    allowed_peer_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None
    tls: TLSServerSettings | None = None
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    maximum_associations: int = 10
    #: Offset applied to acquisition times that carry none (see ``photo.extract_context``).
    local_timezone: dt.tzinfo | None = field(default=None, compare=False)
    #: Our own UID root (``dicom.results``). Objects whose SOP Instance UID is
    #: under it are results this service made, e.g. routed back by a PACS: they
    #: are acknowledged but flagged, so they are never scored as photos.
    own_uid_root: str | None = None

    def __post_init__(self) -> None:
        validate_ae_title(self.ae_title, what="listener ae_title")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, got {self.port!r}")
        if self.allowed_calling_ae_titles is not None:
            titles = frozenset(self.allowed_calling_ae_titles)
            if not titles:
                raise ValueError(
                    "allowed_calling_ae_titles is empty (nobody could connect); use None to allow any"
                )
            for title in titles:
                validate_ae_title(title, what="allowed calling AE title")
            object.__setattr__(self, "allowed_calling_ae_titles", frozenset(t.strip() for t in titles))
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError as exc:
            raise ValueError(f"bind_address must be an IP address, got {self.bind_address!r}") from exc
        if self.allowed_peer_networks is not None:
            networks = tuple(parse_network(n) for n in self.allowed_peer_networks)
            if not networks:
                raise ValueError("allowed_peer_networks is empty; use None to allow any address")
            object.__setattr__(self, "allowed_peer_networks", networks)
        if self.tls is not None and not isinstance(self.tls, TLSServerSettings):
            raise TypeError(f"tls must be TLSServerSettings or None, got {type(self.tls).__name__}")
        for name in ("acse_timeout_s", "dimse_timeout_s", "network_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(self.maximum_associations, bool) or not isinstance(self.maximum_associations, int) \
                or self.maximum_associations < 1:
            raise ValueError(f"maximum_associations must be a positive int, got {self.maximum_associations!r}")
        if self.local_timezone is not None and not isinstance(self.local_timezone, dt.tzinfo):
            raise TypeError(f"local_timezone must be a datetime.tzinfo, got {self.local_timezone!r}")
        if self.own_uid_root is not None:
            validate_uid_root(self.own_uid_root)
