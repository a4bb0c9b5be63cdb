"""The service's one configuration: typed settings (pydantic-settings) from environment
variables and an optional JSON file, validated once at start-up.

Every setting has an environment variable ``CLEFTSCORE_<NAME>``; ``CLEFTSCORE_CONFIG_FILE``
may name a JSON file with the same names in lower case (``{"port": 11112}``), which the
environment overrides; command-line options override both. Nothing here is read at import
time and the class never looks at ``os.environ`` by itself: :func:`load_config` takes the
environment as an argument. Every invalid value ends in one :class:`ConfigError` whose
one-line message names the variable (or the file key, or the command-line option).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    JsonConfigSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from dicom.addresses import Destination, parse_destinations, validate_ae_title
from dicom.network import TLSServerSettings, parse_network
from dicom.uids import DEFAULT_UID_ROOT, validate_uid_root

PREFIX = "CLEFTSCORE_"
CONFIG_FILE_VARIABLE = PREFIX + "CONFIG_FILE"
_BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A setting is missing or invalid; the one-line message names the variable."""


def check_bundle_name(name: str) -> str:
    """A model bundle's name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not isinstance(name, str) or not _BUNDLE_NAME.match(name):
        raise ValueError(f"bundle name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


# ------------------------------------------------------------------ value parsers (str from the environment,
# ------------------------------------------------------------------ JSON values from the file, objects from code)


def _as_value_error(function):
    """Pydantic reports ValueError as a validation error but lets TypeError escape; make both one."""

    def parse(value: Any) -> Any:
        try:
            return function(value)
        except TypeError as error:
            raise ValueError(str(error)) from None

    return parse


def _items(value: Any) -> tuple[Any, ...]:
    """A comma-separated string or a list, as a tuple of items."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise ValueError(f"must be a comma-separated string or a list, got {value!r}")


def _ae_titles(value: Any) -> tuple[str, ...]:
    return tuple(validate_ae_title(item, what="AE title") for item in _items(value))


def _networks(value: Any) -> tuple[Network, ...]:
    return tuple(parse_network(item) for item in _items(value))


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (e.g. 0.0.0.0, 127.0.0.1 or ::)") from None
    return value


def _device(value: str) -> str:
    if not _DEVICE.match(value):
        raise ValueError(f"{value!r} must be auto, cpu, cuda or cuda:N")
    return value


def _time_zone(value: str) -> str:
    if value:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name (e.g. Europe/Berlin)") from None
    return value


def _optional_path(value: Any) -> Any:
    return None if value is None or str(value) == "" else value


def _readable_file(path: Path | None) -> Path | None:
    if path is None:
        return None
    path = path.resolve()
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a readable file")
    return path


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


AETitle = Annotated[str, AfterValidator(_as_value_error(lambda v: validate_ae_title(v, what="AE title")))]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ServiceConfig(BaseSettings):
    """Validated settings (see :func:`load_config`); paths are absolute."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, case_sensitive=False, frozen=True, extra="forbid",
                                      validate_default=True)

    ae_title: AETitle = "CLEFTSCORE"
    port: Annotated[int, Field(ge=0, le=65535)] = 11112
    bind_address: Annotated[str, AfterValidator(_ip_address)] = "0.0.0.0"
    data_dir: Annotated[Path, AfterValidator(Path.resolve)] = Path("data")
    database_url: str = ""  # "" → sqlite file in data_dir
    destinations: Annotated[tuple[Destination, ...], NoDecode, PlainValidator(_as_value_error(parse_destinations))] = ()
    allowed_aes: Annotated[tuple[str, ...], NoDecode, PlainValidator(_as_value_error(_ae_titles))] = ()  # (): any
    #: Peers allowed to connect: IP addresses (as /32 or /128) or CIDR networks; (): any.
    allowed_addresses: Annotated[tuple[Network, ...], NoDecode, PlainValidator(_as_value_error(_networks))] = ()
    inversion_steps: Annotated[int, Field(ge=1)] = 2000
    adaptation_steps: Annotated[int, Field(ge=1)] = 50
    #: Normalisations per photo, each with its own seed; the score is their mean (1 = the paper's single run).
    repeats: Annotated[int, Field(ge=1)] = 1
    #: Inversion schedule: "paper" (method.md 2a as published) or "fast" (pipeline.normalize.schedules).
    mode: Annotated[Literal["paper", "fast"], BeforeValidator(_lower)] = "paper"
    device: Annotated[str, BeforeValidator(_lower), AfterValidator(_device)] = "auto"
    bundle: Annotated[str, AfterValidator(check_bundle_name)] = "default"
    workers: Annotated[int, Field(ge=1)] = 1
    storage_reserve_mb: Annotated[int, Field(ge=0)] = 1024
    uid_root: Annotated[str, AfterValidator(_as_value_error(validate_uid_root))] = DEFAULT_UID_ROOT
    tls_certificate: Annotated[Path | None, BeforeValidator(_optional_path), AfterValidator(_readable_file)] = None
    tls_private_key: Annotated[Path | None, BeforeValidator(_optional_path), AfterValidator(_readable_file)] = None
    tls_client_ca: Annotated[Path | None, BeforeValidator(_optional_path), AfterValidator(_readable_file)] = None
    send_max_attempts: Annotated[int, Field(ge=1)] = 20
    send_backoff_initial_s: Seconds = 5.0
    send_backoff_max_s: Seconds = 600.0
    job_max_attempts: Annotated[int, Field(ge=1)] = 3
    job_lease_s: Seconds = 3600.0
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = "INFO"
    #: IANA zone for DICOM dates and times that carry no offset ("" = this machine's zone).
    timezone: Annotated[str, AfterValidator(_time_zone)] = ""
    demo: bool = False

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values handed in: :func:`load_config` reads the file and the given environment."""
        return (init_settings,)

    @model_validator(mode="after")
    def _check_together(self) -> ServiceConfig:
        if (self.tls_certificate is None) != (self.tls_private_key is None):
            raise ValueError(f"{PREFIX}TLS_CERTIFICATE: TLS needs both {PREFIX}TLS_CERTIFICATE and "
                             f"{PREFIX}TLS_PRIVATE_KEY")
        if self.tls_client_ca is not None and self.tls_certificate is None:
            raise ValueError(f"{PREFIX}TLS_CLIENT_CA: client certificates need server TLS (certificate and key) too")
        if self.tls_certificate is not None:
            self.tls_server()  # the files must load as a certificate and its key
        if self.send_backoff_initial_s > self.send_backoff_max_s:
            raise ValueError(f"{PREFIX}SEND_BACKOFF_INITIAL_S: {self.send_backoff_initial_s:g} is above "
                             f"{PREFIX}SEND_BACKOFF_MAX_S ({self.send_backoff_max_s:g})")
        return self

    def tls_server(self) -> TLSServerSettings | None:
        """The listener's TLS settings, or None without TLS."""
        if self.tls_certificate is None or self.tls_private_key is None:
            return None
        try:
            return TLSServerSettings(self.tls_certificate, self.tls_private_key, self.tls_client_ca)
        except ValueError as error:
            raise ValueError(f"{PREFIX}TLS_CERTIFICATE: {error}") from None

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
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "database_url":
                value = redact_url(self.effective_database_url)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) for v in value]
            view[name] = value
        return view


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


# ------------------------------------------------------------------------------------------------ loading


class _GivenEnvironment(EnvSettingsSource):
    """pydantic-settings' environment source over the mapping handed to :func:`load_config`
    instead of ``os.environ`` (the same override pydantic-settings' own dotenv source makes)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._given = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self._given.items()}  # names are not case-sensitive


def _file_values(file_name: str) -> dict[str, Any]:
    path = Path(file_name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{CONFIG_FILE_VARIABLE}={file_name}: cannot be read ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_FILE_VARIABLE}={file_name}: must hold one JSON object, got {type(data).__name__}")
    return JsonConfigSettingsSource(ServiceConfig, json_file=path)()


def load_config(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None, *,
                options: Mapping[str, str] | None = None) -> ServiceConfig:
    """Build and validate the configuration from the JSON file named by ``CLEFTSCORE_CONFIG_FILE``,
    ``environ`` (pass ``os.environ``) and ``overrides`` (command-line options, ``None`` = not given),
    in increasing precedence.

    ``options`` names the command-line option behind an override (``{"inversion_steps": "--steps"}``)
    for error messages. Raises :class:`ConfigError` with one line naming every bad setting.
    """
    names = set(ServiceConfig.model_fields)
    given = {name: value for name, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(given) - names)
    if unknown:
        raise TypeError(f"load_config got overrides for unknown settings {unknown}")
    file_name = environ.get(CONFIG_FILE_VARIABLE) or ""
    from_file = _file_values(file_name) if file_name else {}
    from_environment = _GivenEnvironment(ServiceConfig, environ)()
    values = {**from_file, **from_environment, **given}

    def where(name: str) -> str:
        if name in given:
            return (options or {}).get(name) or f"command-line option {name}"
        if name in from_environment or name not in from_file:
            return PREFIX + name.upper()
        return f"{file_name}: {name}"

    try:
        return ServiceConfig(**values)
    except ValidationError as error:
        raise ConfigError("; ".join(_describe(item, where) for item in error.errors())) from None


def _describe(error: Mapping[str, Any], where) -> str:
    """One setting's problem as ``CLEFTSCORE_NAME: what is wrong, got what``."""
    kind, context, value = error["type"], error.get("ctx") or {}, error.get("input")
    messages = {
        "greater_than_equal": lambda: f"must be at least {context.get('ge'):g}, got {value}",
        "greater_than": lambda: f"must be more than {context.get('gt'):g}, got {value}",
        "less_than_equal": lambda: f"must be at most {context.get('le'):g}, got {value}",
        "int_parsing": lambda: f"{value!r} is not a whole number",
        "int_from_float": lambda: f"{value!r} is not a whole number",
        "int_type": lambda: f"{value!r} is not a whole number",
        "float_parsing": lambda: f"{value!r} is not a number",
        "float_type": lambda: f"{value!r} is not a number",
        "finite_number": lambda: f"{value!r} is not a finite number",
        "bool_parsing": lambda: f"{value!r} is not a yes/no value (1/0, true/false, yes/no, on/off)",
        "bool_type": lambda: f"{value!r} is not a yes/no value (1/0, true/false, yes/no, on/off)",
        "literal_error": lambda: f"{value!r} must be {context.get('expected')}",
        "string_type": lambda: f"{value!r} is not text",
        "extra_forbidden": lambda: "is not a setting",
        "value_error": lambda: str(context.get("error", error["msg"])),
    }
    text = messages.get(kind, lambda: f"{error['msg']} (got {value!r})")()
    location = error.get("loc") or ()
    if not location:  # a check across settings names its variables itself
        return text
    return f"{where(str(location[0]))}: {text}"
