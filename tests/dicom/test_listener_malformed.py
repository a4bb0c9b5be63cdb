"""The listener answers every C-STORE, malformed ones included (in-process listener, raw test client)."""

from __future__ import annotations

import time

import pytest

from dicom.listener import (
    STATUS_BAD_PIXEL_ENCODING,
    STATUS_BAD_SOP_INSTANCE_UID,
    STATUS_SUCCESS,
    ListenerConfig,
    build_listener,
)
from dicom.storage import DicomFileStore
from tests.dicom import malformed
from tests.dicom.raw_scu import RawStoreSCU


@pytest.fixture
def listener(tmp_path):
    received = []
    config = ListenerConfig(ae_title="CLEFTSCORE", port=0, bind_address="127.0.0.1", allowed_calling_ae_titles=None)
    with build_listener(config, DicomFileStore(tmp_path, reserve_bytes=0), received.append) as running:
        running.received = received
        yield running


@pytest.fixture(scope="module")
def corpus():
    return malformed.generate(seed=11)


def _first(cases, kind: str):
    return next(case for case in cases if case.kind == kind)


def test_request_without_affected_sop_instance_uid_gets_a_failure_status_at_once(listener, corpus) -> None:
    case = _first(corpus, "request")
    assert case.affected_uid is None
    scu = RawStoreSCU(listener.port, [(case.sop_class, case.transfer_syntax)], timeout_s=20)
    try:
        started = time.monotonic()
        assert scu.store(case.data, case.sop_class, case.transfer_syntax, None) == STATUS_BAD_SOP_INSTANCE_UID
        assert time.monotonic() - started < 5
        # The association goes on serving: a complete request right after is stored.
        good = next(c for c in corpus if c.kind == "valid" and c.transfer_syntax == case.transfer_syntax)
        assert scu.store(good.data, good.sop_class, good.transfer_syntax, good.affected_uid) == STATUS_SUCCESS
        assert scu.echo() == 0
    finally:
        scu.close()
    assert [photo.sop_instance_uid for photo in listener.received] == [good.affected_uid]


def test_explicit_length_encapsulated_pixel_data_is_refused(listener, corpus) -> None:
    case = next(c for c in corpus if c.name.startswith("fragments/explicit-length"))
    scu = RawStoreSCU(listener.port, [(case.sop_class, case.transfer_syntax)])
    try:
        status = scu.store(case.data, case.sop_class, case.transfer_syntax, case.affected_uid)
        assert status == STATUS_BAD_PIXEL_ENCODING
    finally:
        scu.close()
    assert listener.received == []


def test_overlong_patient_id_is_an_intake_problem(listener, corpus) -> None:
    case = next(c for c in corpus if c.name.startswith("text/long-id"))
    scu = RawStoreSCU(listener.port, [(case.sop_class, case.transfer_syntax)])
    try:
        assert scu.store(case.data, case.sop_class, case.transfer_syntax, case.affected_uid) == STATUS_SUCCESS
    finally:
        scu.close()
    [photo] = listener.received
    assert photo.context.patient.patient_id is None
    assert any("Patient ID (0010,0020) is not valid" in problem for problem in photo.intake_problems)
