"""Where DICOM peers are: AE titles and ``AE@host:port`` destinations, parsed in one place.

The configuration, the listener's settings and the sender all use these, so a
destination written by one is read back the same by the others; IPv6 hosts are
written in brackets (``PACS@[::1]:104``) so the port stays unambiguous.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAX_AE_TITLE_CHARS = 16

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def validate_ae_title(value: object, *, what: str = "AE title") -> str:
    """Return ``value`` stripped of spaces if it is a valid AE title (PS3.5 AE: 1-16 printable
    ASCII characters, no backslash; leading and trailing spaces are not significant).

    Raises TypeError/ValueError naming ``what`` and the value otherwise.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}: {value!r}")
    title = value.strip(" ")
    if not title:
        raise ValueError(f"{what} is empty: {value!r}")
    if len(title) > MAX_AE_TITLE_CHARS:
        raise ValueError(f"{what} {title!r} is longer than {MAX_AE_TITLE_CHARS} characters")
    if any(not (0x20 <= ord(ch) < 0x7F) or ch == "\\" for ch in title):
        raise ValueError(f"{what} {title!r} contains a control, non-ASCII or backslash character")
    return title


def is_host(host: object) -> bool:
    """True for an IP address (IPv4 or IPv6, without brackets) or a DNS host name."""
    if not isinstance(host, str):
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None


@dataclass(frozen=True)
class Destination:
    """A C-STORE SCP: called AE title, host name or IP address (IPv6 without brackets), TCP port."""

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title, what="destination AE title"))
        if not is_host(self.host):
            raise ValueError(f"destination host {self.host!r} is not a host name or IP address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"destination port must be 1-65535, got {self.port!r}")

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``"AE@host:port"``; IPv6 hosts in brackets: ``"AE@[::1]:104"``.

        The AE title is everything before the last ``@``. Raises TypeError/ValueError
        with one sentence that quotes ``text``.
        """
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
            if ":" not in host:
                raise ValueError(f"destination {text!r}: brackets are for IPv6 addresses only")
        elif ":" in host:
            raise ValueError(f"destination {text!r}: put an IPv6 address in brackets, AE@[::1]:104")
        try:
            ae_title = validate_ae_title(ae_title)
        except ValueError as error:
            raise ValueError(f"destination {text!r}: {error}") from None
        if not is_host(host):
            raise ValueError(f"destination {text!r}: {host!r} is not a host name or IP address")
        if not 1 <= int(port_text) <= 65535:
            raise ValueError(f"destination {text!r}: the port must be 1-65535, got {int(port_text)}")
        return cls(ae_title=ae_title, host=host, port=int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def parse_destinations(value: object) -> tuple[Destination, ...]:
    """Destinations from a comma-separated string or a sequence of strings/Destinations."""
    if isinstance(value, str):
        items: list[object] = [part for part in (p.strip() for p in value.split(",")) if part]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise TypeError(f"destinations must be a comma-separated string or a list, got {type(value).__name__}")
    return tuple(item if isinstance(item, Destination) else Destination.parse(item) for item in items)
