"""What the PDF says about measurement noise: each change judged against the model's repeatability
coefficient (or that no study is stored), and "mean of K repeats ± SD" for averaged scores."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from db.records import RepeatabilityStudy, VariantRepeatability
from pipeline.vocabulary import PRIMARY_VARIANT
from service.reports.pdf import build_report_pdf
from service.reports.request import ReportInput
from tests.service.reports.test_pdf import MODEL, PRIMARY, VISITS, images, normal_input, pytestmark  # noqa: F401

#: Baseline 4.10 → +1.33 and previous 4.90 → +0.53: an RC of 0.80 lies between the two changes.
STUDY = RepeatabilityStudy(model_identity=MODEL.identity, model_name=MODEL.name, non_clinical=True, photos=12,
                           repeats=3, confidence=0.95,
                           variants=(VariantRepeatability(PRIMARY_VARIANT, 0.8 / 2.7719, 0.8, 0.6, 1.2),),
                           created_at=datetime(2024, 2, 1, tzinfo=timezone.utc))


def text_of(data: ReportInput, tmp_path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(build_report_pdf(data))
    raw = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    return " ".join(raw.split())


def test_changes_are_judged_against_the_stored_coefficient(normal_input, tmp_path):
    text = text_of(replace(normal_input, repeatability=STUDY), tmp_path)
    assert "change +1.33 exceeds the repeatability coefficient 0.80" in text  # since baseline
    assert "within measurement noise (repeatability coefficient 0.80)" in text  # since the previous visit
    assert "(exceeds RC)" in text and "(within noise)" in text  # the visit table: +0.80, then +0.53
    assert "12 photos × 3 repeats" in text and "RC = 2.77 × SD = 0.80" in text
    assert "no repeatability study stored" not in text


def test_without_a_study_the_report_says_so(normal_input, tmp_path):
    text = text_of(normal_input, tmp_path)
    assert text.count("no repeatability study stored for this model; whether this change exceeds measurement noise "
                      "is unknown") == 2
    assert "No repeatability study is stored for this model" in text and "(exceeds RC)" not in text


def test_a_mean_of_repeats_shows_its_spread_and_narrows_the_coefficient(normal_input, tmp_path):
    timeline = tuple(replace(point, repeats=3) if point.is_current else point for point in VISITS)
    averaged = replace(normal_input, repeatability=STUDY, timeline=timeline,
                       primary_repeats=(PRIMARY - 0.032, PRIMARY, PRIMARY + 0.032))
    text = text_of(averaged, tmp_path)
    assert "mean of 3 repeats ± 0.032 (SD)" in text
    # One single run against a mean of 3: RC · sqrt((1 + 1/3) / 2) = 0.65.
    assert "change +1.33 exceeds the repeatability coefficient 0.65" in text
    with pytest.raises(ValueError, match="mean of primary_repeats"):
        replace(averaged, primary_repeats=(1.0, 2.0))
    with pytest.raises(ValueError, match="averages 1 repeat.* holds 3"):
        replace(averaged, timeline=VISITS)
    with pytest.raises(ValueError, match="another model"):
        replace(normal_input, repeatability=replace(STUDY, model_identity="sha256:other"))
