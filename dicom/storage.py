"""Crash-safe storage of received DICOM files under ``<root>/<study>/<series>/<sop>.dcm``.

UIDs arrive from the network and become path components, so every UID is checked
against the DICOM UID syntax (digits and dots only) before it touches the file
system. Writes are atomic: a temporary file in the target directory is written
and fsynced, renamed over the final name, and the directory is fsynced, so a
reader sees either the old file, the new file, or nothing — never half a file —
and an acknowledged file survives a power cut.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Longest UID the standard allows (PS3.5 §9.1).
MAX_UID_LENGTH = 64

_UID_SYNTAX = re.compile(r"[0-9]+(\.[0-9]+)*")


class InsufficientStorageError(OSError):
    """Writing would leave less free space than the configured reserve.

    The listener answers 0xA700 (Out of Resources) so that the sender retries later.
    """


def sanitise_uid(value: object, *, what: str = "UID") -> str:
    """Return ``value`` as a UID string that is safe to use as a path component.

    Accepts only digits separated by single dots: no leading or trailing dot, no
    empty component, at most 64 characters. Trailing NUL/space padding (which
    some senders leave on UI values) is removed first. Components with leading
    zeros are tolerated: they are invalid DICOM but harmless in a path, and
    refusing real photos for that would lose data.

    Raises:
        TypeError: ``value`` is not a str.
        ValueError: ``value`` is not a syntactically valid UID; the message names
            ``what`` and the offending value.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}: {value!r}")
    uid = value.rstrip("\x00 ")
    if not uid:
        raise ValueError(f"{what} is empty")
    if len(uid) > MAX_UID_LENGTH:
        raise ValueError(f"{what} is {len(uid)} characters long (max {MAX_UID_LENGTH}): {uid!r}")
    if _UID_SYNTAX.fullmatch(uid) is None:
        raise ValueError(
            f"{what} {uid!r} is not a UID (digits separated by single dots, "
            "no leading/trailing dot)"
        )
    return uid


class StoreOutcome(enum.Enum):
    """What a store call did to the file system."""

    CREATED = "created"  #: No file existed for this SOP Instance UID.
    UNCHANGED = "unchanged"  #: An identical file already existed (duplicate delivery).
    REPLACED = "replaced"  #: A different file existed and was atomically replaced.


@dataclass(frozen=True)
class StoredFile:
    """A file that is on disk and fsynced."""

    path: Path
    size_bytes: int
    sha256: str  #: Hex digest of the file's bytes.
    outcome: StoreOutcome


class DicomFileStore:
    """Atomic, space-checked file storage rooted at one directory.

    Safe to use from several threads (each write has its own temporary file; the
    final rename is atomic). ``reserve_bytes`` is the free space that must remain
    after a write; set it so the database and logs on the same volume keep room.
    """

    def __init__(self, root: Path | str, *, reserve_bytes: int) -> None:
        root = Path(root)
        if isinstance(reserve_bytes, bool) or not isinstance(reserve_bytes, int):
            raise TypeError(f"reserve_bytes must be an int, got {reserve_bytes!r}")
        if reserve_bytes < 0:
            raise ValueError(f"reserve_bytes must be >= 0, got {reserve_bytes}")
        if not root.is_dir():
            raise ValueError(f"storage root {str(root)!r} is not an existing directory")
        self._root = root.resolve()
        self._reserve_bytes = reserve_bytes

    @property
    def root(self) -> Path:
        return self._root

    @property
    def reserve_bytes(self) -> int:
        return self._reserve_bytes

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """Return ``<root>/<study>/<series>/<sop>.dcm``; raise ValueError on a bad UID."""
        study = sanitise_uid(study_uid, what="Study Instance UID")
        series = sanitise_uid(series_uid, what="Series Instance UID")
        sop = sanitise_uid(sop_instance_uid, what="SOP Instance UID")
        return self._root / study / series / f"{sop}.dcm"

    def check_free_space(self, incoming_bytes: int) -> None:
        """Raise InsufficientStorageError unless ``incoming_bytes`` fit above the reserve."""
        free = shutil.disk_usage(self._root).free
        if free - incoming_bytes < self._reserve_bytes:
            raise InsufficientStorageError(
                errno.ENOSPC,
                f"storing {incoming_bytes} bytes would leave {free - incoming_bytes} bytes free "
                f"under {self._root}, below the reserve of {self._reserve_bytes} bytes",
            )

    def store(
        self, study_uid: str, series_uid: str, sop_instance_uid: str, data: bytes
    ) -> StoredFile:
        """Write ``data`` atomically at the path for these UIDs and fsync it.

        Idempotent: storing identical bytes again returns ``UNCHANGED`` without
        writing; different bytes for the same UIDs replace the file atomically
        (``REPLACED``), so the caller can update its records.

        Raises:
            ValueError: a UID is not safe (nothing is written).
            InsufficientStorageError: free space minus ``len(data)`` is below the
                reserve, or the disk filled up while writing.
            OSError: any other file-system failure (no partial file is left).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        target = self.path_for(study_uid, series_uid, sop_instance_uid)
        digest = hashlib.sha256(data).hexdigest()

        existed = target.exists()
        if existed and _file_sha256(target) == digest:
            return StoredFile(target, len(data), digest, StoreOutcome.UNCHANGED)

        self.check_free_space(len(data))
        _make_dirs_durable(target.parent, stop_at=self._root)
        try:
            _write_atomically(target, data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorageError(
                    exc.errno, f"disk full while writing {target}: {exc.strerror}"
                ) from exc
            raise
        outcome = StoreOutcome.REPLACED if existed else StoreOutcome.CREATED
        return StoredFile(target, len(data), digest, outcome)


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durable(directory: Path, *, stop_at: Path) -> None:
    """Create ``directory`` and missing parents below ``stop_at``; fsync each new entry's parent."""
    missing: list[Path] = []
    current = directory
    while current != stop_at and not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # another thread created it meanwhile
            pass
        _fsync_directory(path.parent)


def _write_atomically(target: Path, data: bytes) -> None:
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_path, 0o640)
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
