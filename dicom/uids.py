"""Our UIDs: the one UID root default and the two ways we make UIDs under a root.

Both go through pydicom's ``generate_uid``: random for objects made once, deterministic
(SHA-512 of the given parts) for objects that must come out the same when rebuilt.
"""

from __future__ import annotations

import json

from pydicom.uid import RE_VALID_UID_PREFIX, generate_uid

#: Our UID root. PLACEHOLDER: a sub-arc of the Medical Connections free UID
#: service (1.2.826.0.1.3680043), not registered to us. Replace it with the
#: organisation's registered root (or a 2.25.<UUID> root) before clinical use
#: (``CLEFTSCORE_UID_ROOT``); it is a parameter everywhere.
DEFAULT_UID_ROOT = "1.2.826.0.1.3680043.10.1187."

#: Digits left after the root, so that UIDs under it stay unique (64-character UIDs).
MIN_UID_SUFFIX_DIGITS = 20
MAX_UID_ROOT_CHARS = 64 - MIN_UID_SUFFIX_DIGITS


def validate_uid_root(root: object) -> str:
    """Return ``root`` if it is a valid UID prefix (PS3.5 9.1: numeric components without
    leading zeros, ending in '.') leaving room for 20 or more further digits."""
    if not isinstance(root, str) or not root.endswith("."):
        raise ValueError(f"UID root must be a str ending in '.', got {root!r}")
    if RE_VALID_UID_PREFIX.fullmatch(root) is None:
        raise ValueError(f"UID root {root!r} must be numbers (no leading zeros) separated by single dots")
    if len(root) > MAX_UID_ROOT_CHARS:
        raise ValueError(f"UID root {root!r} is too long ({len(root)} characters; at most {MAX_UID_ROOT_CHARS})")
    return root


def derive_uid(root: str, *parts: str) -> str:
    """A deterministic UID under ``root`` from ``parts`` (same parts, same UID).

    The parts go to ``generate_uid`` as one JSON-encoded entropy source, because pydicom
    joins several sources without a separator (("a", "bc") and ("ab", "c") would collide).
    """
    root = validate_uid_root(root)
    if not parts or not all(isinstance(p, str) for p in parts):
        raise TypeError(f"parts must be one or more str, got {parts!r}")
    return str(generate_uid(prefix=root, entropy_srcs=[json.dumps(list(parts))]))


def new_uid(root: str) -> str:
    """A fresh random UID under ``root``."""
    return str(generate_uid(prefix=validate_uid_root(root)))
