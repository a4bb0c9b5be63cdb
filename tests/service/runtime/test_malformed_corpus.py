"""The generated malformed corpus (tests/dicom/malformed.py) through the running service.

Intake (default suite): every case, over the network, many per association; each gets a
status (or, for a non-photo SOP class, no presentation context), the listener stays alive,
memory stays bounded, and no log line holds a patient name, ID or study description.
Scoring (slow): one representative slice plus real faces, each acknowledged case ends with
results filed: SC + PDF for a success, a failure PDF otherwise.
"""

from __future__ import annotations

import collections
import contextlib
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from db.records import JobState, ResultKind
from tests.dicom import malformed
from tests.dicom.raw_scu import ABORTED, NO_ANSWER, NO_CONTEXT, RawStoreSCU
from tests.service.harness import demo_bundle, running_service, wait_until

PHI_MARKERS = ("Phiname", "Secretgiven", "PHIID", "PHIDESC")
BATCH = 100
#: Most the service's resident memory may grow over the whole corpus (MiB).
RSS_GROWTH_LIMIT_MIB = 150


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _outcome_ok(expect: str, outcome: int | str) -> bool:
    if outcome in (NO_ANSWER, ABORTED):
        return False
    if expect == "any":
        return True
    if expect == "negotiation":
        return outcome == NO_CONTEXT
    if expect == "accept":
        return outcome == 0
    if expect == "refuse":
        return isinstance(outcome, int) and outcome != 0
    return outcome == int(expect.split(":")[1], 16)


def _send_all(port: int, cases) -> dict[str, int | str]:
    contexts = [(case.sop_class, case.transfer_syntax) for case in cases]
    outcomes, scu = {}, None
    for index, case in enumerate(cases):
        if scu is None or index % BATCH == 0:
            if scu is not None:
                assert scu.echo() == 0, f"the listener stopped answering C-ECHO after case {index}"
                scu.close()
            scu = RawStoreSCU(port, contexts)
        outcomes[case.name] = scu.store(case.data, case.sop_class, case.transfer_syntax, case.affected_uid)
        if outcomes[case.name] in (NO_ANSWER, ABORTED):
            scu = None
    if scu is not None:
        assert scu.echo() == 0
        scu.close()
    return outcomes


def _log_text(service) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in service.runs)


def test_corpus_through_intake(tmp_path_factory) -> None:
    cases = malformed.generate()
    assert len(cases) >= 1000
    root = tmp_path_factory.mktemp("corpus")
    bundle = demo_bundle(tmp_path_factory.getbasetemp())
    with running_service(root, bundle, ["NOWHERE@127.0.0.1:9"]) as service:
        warm = malformed.generate(seed=5)[:40]
        _send_all(service.port, warm)
        before = _rss_mib(service.process.pid)
        started = time.monotonic()
        outcomes = _send_all(service.port, cases)
        seconds = time.monotonic() - started
        after = _rss_mib(service.process.pid)
        assert service.process.poll() is None, service.describe()
        text = _log_text(service)
    wrong = [(c.name, c.expect, outcomes[c.name]) for c in cases if not _outcome_ok(c.expect, outcomes[c.name])]
    counts = collections.Counter((c.kind, outcomes[c.name] if isinstance(outcomes[c.name], str)
                                  else f"0x{outcomes[c.name]:04X}") for c in cases)
    summary = f"{len(cases)} cases in {seconds:.0f} s; RSS {before:.0f} -> {after:.0f} MiB; {sorted(counts.items())}"
    print(summary)
    assert not wrong, f"{len(wrong)} cases answered wrongly, e.g. {wrong[:10]}\n{summary}"
    assert after - before < RSS_GROWTH_LIMIT_MIB, summary
    leaks = [marker for marker in PHI_MARKERS if marker in text]
    assert not leaks, f"patient data in the log: {leaks}"


@pytest.mark.slow
def test_representative_slice_is_scored_and_answered(tmp_path_factory, faces_dir) -> None:
    face = np.asarray(Image.open(faces_dir / "obama.jpg").convert("RGB").resize((455, 568)))
    corpus = malformed.generate(seed=7)
    cases = malformed.representative(corpus, per_kind=3) + malformed.face_cases(8, face)
    root = tmp_path_factory.mktemp("slice")
    bundle = demo_bundle(tmp_path_factory.getbasetemp())
    with contextlib.ExitStack() as stack:
        service = stack.enter_context(running_service(root, bundle, ["NOWHERE@127.0.0.1:9"]))
        outcomes = _send_all(service.port, cases)
        accepted = [c for c in cases if outcomes[c.name] == 0]
        assert len(accepted) >= 30

        def finished() -> bool:
            with service.repository() as repository:
                for case in accepted:
                    photo = repository.find_photo(case.affected_uid)
                    if photo is None:
                        continue
                    if not repository.appraisals_for_photo(photo.id):
                        return False
                jobs = repository.queue_counts().jobs
                return jobs[JobState.QUEUED] == 0 and jobs[JobState.RUNNING] == 0

        wait_until(finished, 900, "every accepted case's job to finish", service.describe, interval=2)
        problems = []
        with service.repository() as repository:
            for case in accepted:
                photo = repository.find_photo(case.affected_uid)
                if photo is None:  # an object of ours routed back is recorded nowhere, by design
                    continue
                [appraisal] = repository.appraisals_for_photo(photo.id)
                job = repository.get_job(appraisal.job_id)
                kinds = sorted(r.kind.value for r in repository.result_objects_for(appraisal.id))
                succeeded = job.state is JobState.SUCCEEDED
                expected = ([ResultKind.ENCAPSULATED_PDF.value, ResultKind.SECONDARY_CAPTURE.value] if succeeded
                            else [ResultKind.ENCAPSULATED_PDF.value])
                if job.state not in (JobState.SUCCEEDED, JobState.FAILED) or kinds != expected:
                    problems.append((case.name, job.state, kinds))
                if case.scored and case.scored != ("success" if succeeded else "failure"):
                    problems.append((case.name, "expected " + case.scored, job.state, job.last_error))
                reason = job.last_error or ""
                if not succeeded and not (reason.endswith(".") and "\n" not in reason):
                    problems.append((case.name, "reason", job.last_error))
                if job.error_code == "internal_error":
                    problems.append((case.name, "internal_error", job.last_error))
        text = _log_text(service)
    assert not problems, problems
    leaks = [marker for marker in PHI_MARKERS if marker in text]
    assert not leaks, f"patient data in the log: {leaks}"
    assert "Traceback" not in text, "an expected failure was logged with a traceback"
