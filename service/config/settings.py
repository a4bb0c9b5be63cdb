"""The service's one configuration: environment variables (and an optional JSON file),
validated once at start-up.

Every setting has an environment variable ``CLEFTSCORE_<NAME>``; ``CLEFTSCORE_CONFIG_FILE``
may name a JSON file with the same names in lower case (``{"port": 11112}``), which the
environment overrides. Nothing here is read at import time: :func:`load_config` takes
the environment as an argument.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PREFIX = "CLEFTSCORE_"
_AE = re.compile(r"^[ -~]{1,16}$")
_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class DestinationSetting:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class ServiceConfig:
    """Validated settings (see :func:`load_config`); paths are absolute."""

    ae_title: str = "CLEFTSCORE"
    port: int = 11112
    bind_address: str = "0.0.0.0"
    data_dir: Path = Path("data")
    database_url: str = ""  # "" → sqlite file in data_dir
    destinations: tuple[DestinationSetting, ...] = ()
    allowed_aes: tuple[str, ...] = ()  # empty: any calling AE title
    allowed_addresses: tuple[str, ...] = ()  # empty: any peer; else IPs or CIDR networks
    inversion_steps: int = 2000
    adaptation_steps: int = 50
    #: Inversion schedule: "paper" (method.md 2a as published) or "fast" (pipeline.normalize.schedules).
    mode: str = "paper"
    device: str = "auto"
    bundle: str = "default"
    workers: int = 1
    storage_reserve_mb: int = 1024
    uid_root: str = "1.2.826.0.1.3680043.10.1187."
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    tls_client_ca: Path | None = None
    send_max_attempts: int = 20
    send_backoff_initial_s: float = 5.0
    send_backoff_max_s: float = 600.0
    job_max_attempts: int = 3
    job_lease_s: float = 3600.0
    log_level: str = "INFO"
    #: IANA zone for DICOM dates and times that carry no offset ("" = this machine's zone).
    timezone: str = ""
    demo: bool = field(default=False)

    def local_timezone(self) -> dt.tzinfo:
        if self.timezone:
            return ZoneInfo(self.timezone)
        return dt.datetime.now().astimezone().tzinfo

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "incoming"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cleftscore.db'}"

    def public_view(self) -> dict[str, Any]:
        """Every setting for display, with passwords removed from URLs."""
        view: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "database_url":
                value = redact_url(self.effective_database_url)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) for v in value]
            view[item.name] = value
        return view


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def parse_destination(text: str) -> DestinationSetting:
    match = re.match(r"^([^@]{1,16})@(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})$", text.strip())
    if not match:
        raise ConfigError(f"destination {text!r} must look like AE@host:port")
    ae, host, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
    if not _AE.match(ae) or ae.strip() != ae or "\\" in ae:
        raise ConfigError(f"destination AE title {ae!r} is not a valid AE title")
    if not 1 <= port <= 65535:
        raise ConfigError(f"destination port {port} is out of range")
    return DestinationSetting(ae, host, port)


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _convert(name: str, raw: Any) -> Any:
    """Turn one raw setting (string from the environment, or JSON value) into its type."""
    env = PREFIX + name.upper()
    text = raw if isinstance(raw, str) else None
    try:
        if name == "destinations":
            items = _split(text) if text is not None else tuple(raw)
            return tuple(parse_destination(item) for item in items)
        if name in ("allowed_aes", "allowed_addresses"):
            return _split(text) if text is not None else tuple(str(v) for v in raw)
        if name in ("port", "inversion_steps", "adaptation_steps", "workers", "storage_reserve_mb",
                    "send_max_attempts", "job_max_attempts"):
            return int(raw)
        if name in ("send_backoff_initial_s", "send_backoff_max_s", "job_lease_s"):
            return float(raw)
        if name in ("data_dir",):
            return Path(raw)
        if name.startswith("tls_"):
            return Path(raw) if str(raw) else None
        if name == "mode":
            return str(raw).strip().lower()
        if name == "demo":
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in ("1", "true", "yes", "on")
        return str(raw)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise ConfigError(f"{env}: {error}") from None
        raise ConfigError(f"{env}={raw!r} is not valid ({error})") from None


def load_config(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> ServiceConfig:
    """Build and validate the configuration from ``environ`` (pass ``os.environ``),
    an optional JSON file named by ``CLEFTSCORE_CONFIG_FILE``, and ``overrides``
    (command-line options), in increasing precedence."""
    names = {item.name for item in fields(ServiceConfig)}
    values: dict[str, Any] = {}
    file_name = environ.get(PREFIX + "CONFIG_FILE")
    if file_name:
        try:
            data = json.loads(Path(file_name).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{PREFIX}CONFIG_FILE={file_name}: cannot be read ({error})") from None
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{file_name}: unknown settings {unknown}")
        values.update({key: _convert(key, value) for key, value in data.items()})
    for name in names:
        raw = environ.get(PREFIX + name.upper())
        if raw is not None:
            values[name] = _convert(name, raw)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    config = ServiceConfig(**values)
    config = _resolve_paths(config)
    validate(config)
    return config


def _resolve_paths(config: ServiceConfig) -> ServiceConfig:
    changes = {item.name: getattr(config, item.name).resolve() for item in fields(config)
               if isinstance(getattr(config, item.name), Path)}
    return ServiceConfig(**{**{f.name: getattr(config, f.name) for f in fields(config)}, **changes})


def validate(config: ServiceConfig) -> None:
    def fail(name: str, message: str) -> None:
        raise ConfigError(f"{PREFIX}{name.upper()}: {message}")

    if not _AE.match(config.ae_title) or config.ae_title.strip() != config.ae_title or "\\" in config.ae_title:
        fail("ae_title", f"{config.ae_title!r} must be 1-16 printable characters without edge spaces")
    if not 0 <= config.port <= 65535:
        fail("port", f"{config.port} is out of range")
    if config.inversion_steps < 1:
        fail("inversion_steps", f"must be at least 1, got {config.inversion_steps}")
    if config.adaptation_steps < 0:
        fail("adaptation_steps", f"must be at least 0, got {config.adaptation_steps}")
    if config.mode not in ("paper", "fast"):
        fail("mode", f"{config.mode!r} must be paper or fast")
    if config.device not in ("auto", "cpu", "cuda") and not re.match(r"^cuda:\d+$", config.device):
        fail("device", f"{config.device!r} must be auto, cpu, cuda or cuda:N")
    if config.workers < 1:
        fail("workers", f"must be at least 1, got {config.workers}")
    if config.storage_reserve_mb < 0:
        fail("storage_reserve_mb", f"must be at least 0, got {config.storage_reserve_mb}")
    if not _UID_ROOT.match(config.uid_root) or len(config.uid_root) > 40:
        fail("uid_root", f"{config.uid_root!r} must be a dotted numeric root ending in '.', at most 40 characters")
    for ae in config.allowed_aes:
        if not _AE.match(ae):
            fail("allowed_aes", f"{ae!r} is not a valid AE title")
    if (config.tls_certificate is None) != (config.tls_private_key is None):
        fail("tls_certificate", "TLS needs both CLEFTSCORE_TLS_CERTIFICATE and CLEFTSCORE_TLS_PRIVATE_KEY")
    if config.tls_client_ca is not None and config.tls_certificate is None:
        fail("tls_client_ca", "client certificates need server TLS (certificate and key) too")
    if config.timezone:
        try:
            ZoneInfo(config.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            fail("timezone", f"{config.timezone!r} is not an IANA time zone name (e.g. Europe/Berlin)")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        fail("log_level", f"{config.log_level!r} must be DEBUG, INFO, WARNING or ERROR")
    if config.send_backoff_initial_s <= 0 or config.send_backoff_max_s < config.send_backoff_initial_s:
        fail("send_backoff_initial_s", "backoff must be positive and not above CLEFTSCORE_SEND_BACKOFF_MAX_S")
