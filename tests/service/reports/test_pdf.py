"""The clinical PDF report: content (pdftotext), rendering (pdftoppm), trend data, calibration, validation."""

from __future__ import annotations

import io
import logging
import math
import shutil
import subprocess
from dataclasses import replace
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, stats
from skimage.transform import resize

from db.records import Calibration
from pipeline.compare.render import heatmap_to_rgb, overlay_heatmap
from pipeline.vocabulary import PRIMARY_VARIANT, ScoreVariant, VariantScore
from service.reports import charts as rc
from service.reports.pdf import build_report_pdf
from service.reports.request import (
    ReportImages,
    ReportInput,
    ReportModel,
    ReportPatient,
    ReportStudy,
    TimelinePoint,
)
from service.research.calibration import calibrated_rating

pytestmark = pytest.mark.skipif(shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None,
                                reason="poppler-utils (pdftoppm, pdftotext) not installed")

TZ = timezone(timedelta(hours=1))
PRIMARY = 5.4321
FAILURE = "No face was found in the photo (best score 0.12); the detection threshold is 0.50."
# Three visits, passed out of date order: the current one first.
VISITS = (
    TimelinePoint(datetime(2024, 3, 5, 10, 2, tzinfo=TZ), PRIMARY, "Post-op follow-up", True),
    TimelinePoint(datetime(2023, 1, 10, 9, 0, tzinfo=TZ), 4.10, "First consultation", False),
    TimelinePoint(datetime(2023, 8, 20, 9, 0, tzinfo=TZ), 4.90, "Pre-op", False),
)


@pytest.fixture(scope="module")
def images(astronaut_rgb) -> ReportImages:
    rng = np.random.default_rng(7)
    photo = astronaut_rgb
    heat = ndimage.gaussian_filter(rng.random(photo.shape[:2]), 12)
    overlay = overlay_heatmap(photo, heat - heat.min(), 0.5)
    aligned = (resize(photo[20:320, 90:390], (256, 256)) * 255).round().astype(np.uint8)
    normalized = np.clip(aligned.astype(int) + rng.integers(-15, 15, aligned.shape), 0, 255).astype(np.uint8)
    small_heat = ndimage.gaussian_filter(rng.random((256, 256)), 6)
    outline = aligned.copy()
    outline[150:152, 80:180] = (0, 255, 0)
    return ReportImages(overlay, aligned, normalized, heatmap_to_rgb(small_heat - small_heat.min()), outline)


def all_scores() -> tuple[VariantScore, ...]:
    rng = np.random.default_rng(3)
    scores = []
    for region in ("mouth_nose", "face_without_eyes"):
        for method in ("pse", "lpips", "ssim"):
            for processing in ("base", "ycbcr", "erosion", "ycbcr+erosion"):
                for adapted in (True, False):
                    primary = (method, processing, region, adapted) == ("pse", "ycbcr+erosion", "mouth_nose", True)
                    order = "diff_then_erode" if "erosion" in processing else None
                    scores.append(VariantScore(ScoreVariant(method, processing, region, adapted, order),
                                               PRIMARY if primary else float(rng.uniform(2, 8))))
    return tuple(scores)


MODEL = ReportModel("ffhq-demo", "sha256:" + "ab12" * 16, True, "0.1.0",
                    {"inversion": {"steps": 2000}, "adaptation": {"steps": 50, "lr": 3e-4},
                     "erosion_orders": ["diff_then_erode"], "pose_limits": {"max_yaw": 20.0, "max_pitch": 20.0}},
                    {"preprocess": 1.2, "inversion": 95.0, "adaptation": 12.3, "total": 110.0})
PATIENT = ReportPatient("PID-0042", "HOSP", "Łukasiewicz^Zoë", date(2021, 6, 2), "F")
STUDY = ReportStudy(date(2024, 3, 5), time(10, 0), "Cleft lip photo", "ACC123",
                    datetime(2024, 3, 5, 10, 2, tzinfo=TZ))
# se(slope) = residual_sd / sqrt(Sxx) and se(intercept)² = residual_sd² (1/n + mean² / Sxx), as OLS gives.
CALIBRATION = Calibration(slope=0.9, intercept=-0.5, slope_se=0.08, intercept_se=0.4, residual_sd=0.5, n=125,
                          score_mean=4.969, score_sxx=39.0625, pearson_r=0.89, model_identity=MODEL.identity,
                          source="125 rated photos", created_at=datetime(2024, 1, 1, tzinfo=timezone.utc))


@pytest.fixture(scope="module")
def normal_input(images) -> ReportInput:
    return ReportInput(PATIENT, STUDY, MODEL, images, all_scores(), PRIMARY, VISITS, CALIBRATION, None,
                       {"yaw": 3.2, "pitch": -1.0, "roll": 0.5}, datetime(2024, 3, 5, 11, 0, tzinfo=TZ))


@pytest.fixture(scope="module")
def failed_input() -> ReportInput:
    return ReportInput(PATIENT, STUDY, MODEL, None, (), None, VISITS[1:], None, FAILURE, None,
                       datetime(2024, 3, 5, 11, 0, tzinfo=TZ), failure_code="no_face")


def render(pdf: bytes, folder: Path, name: str) -> tuple[str, list[np.ndarray]]:
    """pdftotext of the whole PDF, and every page as a greyscale array at 50 dpi."""
    path = folder / f"{name}.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(path), str(folder / name)], check=True)
    pages = [np.asarray(Image.open(p).convert("L"), dtype=np.float64) for p in sorted(folder.glob(f"{name}-*.png"))]
    return text, pages


@pytest.fixture(scope="module")
def normal_report(normal_input, tmp_path_factory):
    return render(build_report_pdf(normal_input), tmp_path_factory.mktemp("normal"), "normal")


@pytest.fixture(scope="module")
def failed_report(failed_input, tmp_path_factory):
    return render(build_report_pdf(failed_input), tmp_path_factory.mktemp("failed"), "failed")


def assert_pages_have_content(pages: list[np.ndarray]) -> None:
    for number, page in enumerate(pages, 1):
        # A4 is 595 × 842 pt: 413.4 × 584.7 px at 50 dpi, rounded either way
        assert abs(page.shape[0] - 584.7) < 1 and abs(page.shape[1] - 413.4) < 1, page.shape
        # a page with only the footer has std ≈ 11 and ink ≈ 0.003 at 50 dpi
        assert page.std() > 10, f"page {number} looks blank (std {page.std():.1f})"
        assert (page < 200).mean() > 0.008, f"page {number} has almost no ink ({(page < 200).mean():.4f})"


def test_normal_report_pages_and_text(normal_report) -> None:
    text, pages = normal_report
    assert len(pages) == 3
    assert_pages_have_content(pages)
    # the photo page: a large picture makes much of page 1 non-white
    assert (pages[0] < 200).mean() > 0.25
    for expected in ("PID-0042", "Łukasiewicz, Zoë", "05 Mar 2024", "5.43", "Page 1 of 3", "Page 3 of 3",
                     "DEMO — NOT FOR CLINICAL USE — scores from a non-clinical model", "ACC123",
                     "age at photo 2 years 9 months", "What the score means and its limits", "Hayajneh"):
        assert expected in text, expected
    assert text.count("DEMO — NOT FOR CLINICAL USE") == 3  # the banner is on every page
    assert text.count("Patient ID PID-0042 (HOSP) · Study date 05 Mar 2024") == 3  # footer on every page
    # calibrated: −0.5 + 0.9 × 5.4321 = 4.389 → "4.4"
    assert "4.4 (95 % prediction interval" in text
    # changes, by hand: 5.4321 − 4.10 = 1.3321, 5.4321 − 4.90 = 0.5321; ×0.9 rating points
    assert "+1.33 since 10 Jan 2023" in text and "+1.2 rating points" in text
    assert "+0.53 since 20 Aug 2023" in text and "+0.5 rating points" in text


def test_failed_report_says_what_went_wrong_without_scores(failed_report) -> None:
    text, pages = failed_report
    assert len(pages) == 1
    assert_pages_have_content(pages)
    assert FAILURE in " ".join(text.split())
    for expected in ("No score: this photo could not be appraised", "Retake a frontal photo", "PID-0042",
                     "05 Mar 2024", "Page 1 of 1", "DEMO — NOT FOR CLINICAL USE", "Earlier visits", "4.10", "4.90"):
        assert expected in text, expected
    assert "5.43" not in text and "All score variants" not in text


def test_clinical_model_has_no_demo_banner(normal_input, tmp_path) -> None:
    one_visit = replace(normal_input, model=replace(MODEL, non_clinical=False), calibration=None, scores=(),
                        timeline=VISITS[:1], images=replace(normal_input.images, mask_outline_rgb=None))
    text, pages = render(build_report_pdf(one_visit), tmp_path, "clinical")
    assert_pages_have_content(pages)
    assert "DEMO" not in text and "non-clinical" not in text
    assert "not calibrated" in text
    assert "trends start with the second visit" not in text  # that sentence is inside the chart picture
    assert "none: this is the first visit scored with this model" in text
    assert "All score variants" not in text and "5.43" in text


def test_chart_data_is_in_date_order_and_png_is_drawn() -> None:
    data = rc.timeline_chart_data(VISITS)
    assert [w.date() for w in data.when] == [date(2023, 1, 10), date(2023, 8, 20), date(2024, 3, 5)]
    assert data.scores == (4.10, 4.90, PRIMARY)
    assert data.current_index == 2
    png = rc.render_timeline_png(VISITS, CALIBRATION)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chart = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    assert chart.shape == (round(2.6 * 200), 7 * 200, 3)
    assert chart.std() > 10
    red = (chart[..., 0] > 150) & (chart[..., 1] < 90) & (chart[..., 2] < 90)  # the current-visit marker
    assert red.sum() > 50
    # visit dates label the x axis; dates too close to label are skipped, the latest is always kept
    assert rc._spaced_ticks([0.0, 10.0, 12.0, 100.0], 15.0) == [0.0, 100.0]
    assert rc._spaced_ticks([0.0, 50.0, 55.0], 15.0) == [0.0, 55.0]
    single = np.asarray(Image.open(io.BytesIO(rc.render_timeline_png(VISITS[:1], None))).convert("L"))
    assert single.std() > 10


def test_score_changes_by_hand() -> None:
    changes = rc.score_changes(VISITS)
    assert changes.visits == 3
    assert changes.since_baseline == pytest.approx(1.3321)
    assert changes.since_previous == pytest.approx(0.5321)
    assert changes.baseline is VISITS[1] and changes.previous is VISITS[2]
    # the current visit need not be the latest (an older photo scored late)
    middle = (replace(VISITS[0], is_current=False), VISITS[1], replace(VISITS[2], is_current=True))
    changes = rc.score_changes(middle)
    assert changes.since_baseline == pytest.approx(0.80) and changes.since_previous == pytest.approx(0.80)
    assert rc.score_changes(VISITS[:1]).since_baseline is None
    assert rc.score_changes(VISITS[1:]).since_previous is None  # no current visit


def test_visits_of_another_model_are_left_out(normal_input, tmp_path) -> None:
    other = TimelinePoint(datetime(2022, 6, 1, tzinfo=TZ), 9.0, "Old model", False, model_identity="sha256:other")
    data = replace(normal_input, timeline=VISITS + (other,))
    assert other not in data.comparable_timeline()
    text, _ = render(build_report_pdf(data), tmp_path, "mixed")
    assert "1 visit was scored with a different model and is not shown" in " ".join(text.split())
    assert "+1.33 since 10 Jan 2023" in text  # the baseline is still the first comparable visit


def test_current_visit_is_added_when_the_timeline_lacks_it(normal_input, tmp_path) -> None:
    data = replace(normal_input, timeline=VISITS[1:])  # e.g. the database had not listed it yet
    visits = data.comparable_timeline()
    assert [p.score for p in visits] == [4.10, 4.90, PRIMARY] and visits[-1].is_current
    assert visits[-1].when == STUDY.acquisition_datetime
    nothing = replace(normal_input, timeline=(), study=replace(STUDY, acquisition_datetime=None))
    (only,) = nothing.comparable_timeline()
    assert only.when == datetime(2024, 3, 5, 10, 0, tzinfo=TZ) and only.is_current
    text, _ = render(build_report_pdf(data), tmp_path, "added")
    assert "+1.33 since 10 Jan 2023" in text and "05 Mar 2024 (this visit)" in text


def test_prediction_interval_matches_ols_textbook_formula() -> None:
    rng = np.random.default_rng(11)
    s = rng.uniform(3, 7, 40)
    rating = 0.8 * s - 0.3 + rng.normal(0, 0.4, s.size)
    fit = stats.linregress(s, rating)
    sd = math.sqrt(np.sum((rating - fit.intercept - fit.slope * s) ** 2) / (s.size - 2))
    sxx = np.sum((s - s.mean()) ** 2)
    calibration = Calibration(fit.slope, fit.intercept, fit.stderr, fit.intercept_stderr, sd, s.size,
                              float(s.mean()), float(sxx), fit.rvalue, "sha256:model", "synthetic",
                              datetime(2024, 1, 1, tzinfo=timezone.utc))
    s0 = 6.5
    half = stats.t.ppf(0.975, s.size - 2) * sd * math.sqrt(1 + 1 / s.size + (s0 - s.mean()) ** 2 / sxx)
    rating0 = calibrated_rating(calibration, s0)
    assert rating0.value == pytest.approx(fit.intercept + fit.slope * s0)
    assert (rating0.low, rating0.high) == pytest.approx((rating0.value - half, rating0.value + half))
    # The same as sqrt(σ² + σ²/n + (s − mean)²·se(slope)²), the form the report used before.
    var_fit = sd**2 / s.size + (s0 - s.mean()) ** 2 * fit.stderr**2
    half_se = stats.t.ppf(0.975, s.size - 2) * math.sqrt(sd**2 + var_fit)
    assert rating0.high - rating0.value == pytest.approx(half_se, rel=1e-12)


def test_formatting() -> None:
    assert rc.format_score(5.4321) == "5.43"
    assert rc.format_change(0.004) == "0.00" and rc.format_change(-0.5) == "\u22120.50"
    assert rc.format_date(date(2024, 3, 5)) == "05 Mar 2024"
    when = datetime(2024, 3, 5, 7, 5, tzinfo=timezone(timedelta(hours=-4, minutes=-30)))
    assert rc.format_datetime(when) == "05 Mar 2024 07:05 (UTC\u221204:30)"
    assert rc.format_person_name("Doe^Jane^M^Dr") == "Doe, Dr Jane M"
    assert rc.format_person_name("") == "—"
    assert rc.format_age(date(2023, 1, 31), date(2023, 3, 1)) == "1 month"
    assert rc.markup("a<b & ρ≥") == 'a&lt;b &amp; <font face="DejaVuSans">ρ≥</font>'


def test_validation_names_the_field_but_not_patient_values(normal_input, images) -> None:
    with pytest.raises(ValueError, match="time-zone aware"):
        TimelinePoint(datetime(2024, 1, 1), 1.0, "", False)
    with pytest.raises(TypeError, match="aligned must be a uint8"):
        ReportImages(images.overlay_on_photo, images.aligned.astype(np.float32), images.normalized,
                     images.heatmap_rgb)
    with pytest.raises(ValueError, match="normalized has shape"):
        ReportImages(images.overlay_on_photo, images.aligned, images.normalized[:100, :100], images.heatmap_rgb)
    with pytest.raises(ValueError, match="failed report"):
        replace(normal_input, failure_reason=FAILURE)
    with pytest.raises(ValueError, match="differs from primary_score"):
        replace(normal_input, primary_score=5.0)
    with pytest.raises(ValueError, match="images are required"):
        replace(normal_input, images=None)
    with pytest.raises(ValueError, match="erosion_order"):
        ScoreVariant("pse", "ycbcr+erosion", "mouth_nose", True, None)
    with pytest.raises(ValueError, match="differs from the primary variant's score"):
        replace(normal_input, scores=(VariantScore(PRIMARY_VARIANT, 1.0),))
    with pytest.raises(ValueError, match="calibration was fitted for another model"):
        replace(normal_input, calibration=replace(CALIBRATION, model_identity="sha256:other"))
    with pytest.raises(ValueError, match="n must be"):
        replace(CALIBRATION, n=2)
    with pytest.raises(ValueError) as error:
        ReportPatient("SECRET-ID", "", "Secret^Name", None, "unknown-sex")
    assert "SECRET" not in str(error.value) and "unknown-sex" not in str(error.value)
    with pytest.raises(TypeError, match="birth_date"):
        ReportPatient("X", "", "", datetime(2020, 1, 1), "F")


def test_nothing_about_the_patient_is_logged(normal_input, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    build_report_pdf(replace(normal_input, timeline=VISITS[:1], images=replace(normal_input.images)))
    logged = " ".join(record.getMessage() for record in caplog.records)
    for secret in ("PID-0042", "Łukasiewicz", "Zoë", "ACC123", "2021"):
        assert secret not in logged
