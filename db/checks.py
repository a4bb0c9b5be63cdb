"""Small argument checks used when records are constructed; errors name the bad value."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def json_object(value: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """A deep, JSON-normalised copy of ``value`` (None stays None); raise if not JSON."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from None


def set_field(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def require_text(value: str, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def require_uid(value: str, name: str) -> None:
    require_text(value, name)
    if len(value) > 64:
        raise ValueError(f"{name} must be at most 64 characters (DICOM UI), got {len(value)}")


def require_finite(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
