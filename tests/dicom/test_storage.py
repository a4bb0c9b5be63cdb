"""dicom.storage: UID sanitising, layout, atomic idempotent writes, free-space reserve."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicom.storage import (
    DicomFileStore,
    InsufficientStorageError,
    StoreOutcome,
    sanitise_uid,
)

STUDY, SERIES, SOP = "1.2.840.113619.2.55", "1.2.840.113619.2.55.3", "1.2.840.113619.2.55.3.7"


@pytest.mark.parametrize(
    "uid", ["1", "0.0", "1.2.840.10008.5.1.4.1.1.77.1.4", "2.25.1" + "9" * 57]
)
def test_valid_uids_pass_unchanged(uid: str) -> None:
    assert sanitise_uid(uid) == uid


def test_trailing_nul_and_space_padding_is_removed() -> None:
    assert sanitise_uid("1.2.3\x00") == "1.2.3"
    assert sanitise_uid("1.2.3 ") == "1.2.3"


@pytest.mark.parametrize(
    "bad",
    [
        "", ".1.2", "1.2.", "1..2", "1.2/3", "../1.2", "1.2.3\\4", "1.a.3", " 1.2", "1.2\n",
        "1." + "2" * 63,  # 65 characters
        "/etc/passwd", "1.2.3\x00.4", "１.２",  # full-width digits are not ASCII digits
    ],
)
def test_unsafe_or_malformed_uids_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        sanitise_uid(bad, what="SOP Instance UID")


def test_non_string_uid_raises_type_error() -> None:
    with pytest.raises(TypeError, match="int"):
        sanitise_uid(123)


@given(st.text(max_size=80))
def test_accepted_uids_are_always_safe_path_components(text: str) -> None:
    try:
        uid = sanitise_uid(text)
    except ValueError:
        return
    assert 0 < len(uid) <= 64
    assert set(uid) <= set("0123456789.")
    assert not uid.startswith(".") and not uid.endswith(".") and ".." not in uid
    assert os.sep not in uid


def test_layout_is_root_study_series_sop(tmp_path) -> None:
    store = DicomFileStore(tmp_path, reserve_bytes=0)
    assert store.path_for(STUDY, SERIES, SOP) == tmp_path.resolve() / STUDY / SERIES / f"{SOP}.dcm"
    with pytest.raises(ValueError, match="Series Instance UID"):
        store.path_for(STUDY, "../../etc", SOP)


def test_store_writes_bytes_and_leaves_no_temporary_files(tmp_path) -> None:
    store = DicomFileStore(tmp_path, reserve_bytes=0)
    data = os.urandom(10_000)
    stored = store.store(STUDY, SERIES, SOP, data)
    assert stored.outcome is StoreOutcome.CREATED
    assert stored.path.read_bytes() == data
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in stored.path.parent.iterdir()) == [f"{SOP}.dcm"]


def test_same_sop_twice_is_idempotent_and_different_bytes_replace(tmp_path) -> None:
    store = DicomFileStore(tmp_path, reserve_bytes=0)
    first = store.store(STUDY, SERIES, SOP, b"DICM-one")
    mtime = first.path.stat().st_mtime_ns
    again = store.store(STUDY, SERIES, SOP, b"DICM-one")
    assert (again.path, again.outcome) == (first.path, StoreOutcome.UNCHANGED)
    assert first.path.stat().st_mtime_ns == mtime  # not rewritten
    replaced = store.store(STUDY, SERIES, SOP, b"DICM-two")
    assert (replaced.path, replaced.outcome) == (first.path, StoreOutcome.REPLACED)
    assert first.path.read_bytes() == b"DICM-two"
    assert len(list(first.path.parent.iterdir())) == 1


def test_reserve_larger_than_free_space_raises_insufficient_storage(tmp_path) -> None:
    free = shutil.disk_usage(tmp_path).free
    store = DicomFileStore(tmp_path, reserve_bytes=free + 1)
    with pytest.raises(InsufficientStorageError, match="reserve") as info:
        store.store(STUDY, SERIES, SOP, b"x" * 100)
    assert info.value.errno == errno.ENOSPC
    assert not (tmp_path / STUDY).exists() or not any((tmp_path / STUDY).rglob("*.dcm"))


def test_reserve_counts_the_incoming_bytes(tmp_path) -> None:
    free = shutil.disk_usage(tmp_path).free
    store = DicomFileStore(tmp_path, reserve_bytes=max(free - 10_000_000, 0))
    store.check_free_space(1_000)  # fits (unless the disk changes by 10 MB meanwhile)
    with pytest.raises(InsufficientStorageError):
        store.check_free_space(20_000_000)


def test_failed_write_leaves_neither_partial_file_nor_temporary(tmp_path, monkeypatch) -> None:
    store = DicomFileStore(tmp_path, reserve_bytes=0)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="injected") as info:
        store.store(STUDY, SERIES, SOP, b"payload")
    assert not isinstance(info.value, InsufficientStorageError)
    monkeypatch.undo()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_disk_full_during_write_is_insufficient_storage(tmp_path, monkeypatch) -> None:
    store = DicomFileStore(tmp_path, reserve_bytes=0)
    (tmp_path / STUDY / SERIES).mkdir(parents=True)  # directories exist; only the file write fails
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self._handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(InsufficientStorageError, match="disk full"):
        store.store(STUDY, SERIES, SOP, b"payload")
    monkeypatch.undo()
    assert list((tmp_path / STUDY / SERIES).iterdir()) == []


def test_concurrent_stores_of_one_sop_end_with_one_complete_file(tmp_path) -> None:
    store = DicomFileStore(tmp_path, reserve_bytes=0)
    payloads = [bytes([i]) * 50_000 for i in range(8)]
    threads = [threading.Thread(target=store.store, args=(STUDY, SERIES, SOP, p)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.path_for(STUDY, SERIES, SOP).read_bytes()
    assert final in payloads  # one whole payload, never a mix
    assert len(list(store.path_for(STUDY, SERIES, SOP).parent.iterdir())) == 1


def test_constructor_validates_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="not an existing directory"):
        DicomFileStore(tmp_path / "missing", reserve_bytes=0)
    with pytest.raises(ValueError, match="reserve_bytes"):
        DicomFileStore(tmp_path, reserve_bytes=-1)
    with pytest.raises(TypeError, match="reserve_bytes"):
        DicomFileStore(tmp_path, reserve_bytes=1.5)
