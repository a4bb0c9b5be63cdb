"""Page layout of the PDF report: platypus flowables per section, page decoration, images.

Used by :func:`service.reports.pdf.build_report_pdf`; numbers, text and the chart come from
:mod:`service.reports.charts`. Sections: header, result box (or failure box), images,
trend chart with the visit list, meaning and limits, all score variants, model.
"""

from __future__ import annotations

import io
import statistics
from dataclasses import dataclass

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.platypus import CondPageBreak, Flowable, Image, KeepTogether, Paragraph, Spacer, Table, TableStyle

from dicom.text import clean_text
from pipeline.vocabulary import (
    NON_CLINICAL_LABEL,
    PRIMARY_VARIANT,
    ErosionOrder,
    HeatmapMethod,
    Processing,
    Region,
    ScoreVariant,
)
from service.reports import charts as rc
from service.reports.advice import ADVICE, RETAKE
from service.reports.request import SEX_NAMES, ReportInput
from service.research.calibration import calibrated_rating
from service.research.repeatability import judge_change, significant_decimals

# --------------------------------------------------------------------------- images


def encode_image(array, max_side: int, *, jpeg: bool) -> tuple[bytes, tuple[int, int]]:
    """uint8 RGB → JPEG (quality 90) or PNG bytes, shrunk to max_side; also (width, height)."""
    from PIL import Image as PILImage

    image = PILImage.fromarray(array)
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             PILImage.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90) if jpeg else image.save(buffer, format="PNG")
    return buffer.getvalue(), image.size


@dataclass(frozen=True)
class ReportAssets:
    """Encoded pictures for the PDF, made once for both layout passes."""

    photo: tuple[bytes, tuple[int, int]] | None
    tiles: tuple[tuple[bytes, str], ...]  # (image, caption)
    chart: tuple[bytes, float] | None  # PNG and its height / width


def prepare_assets(data: ReportInput) -> ReportAssets:
    """Encode the report's images (photo ≤ 1400 px, tiles ≤ 400 px) and render the trend chart."""
    points = data.comparable_timeline()
    width_in, height_in = rc.CHART_SIZE_IN
    height_in *= 0.8 if data.failed else 1.0  # leaves room for the failure page to stay one page
    chart = None
    if points:
        chart = (rc.render_timeline_png(points, data.calibration, width_in=width_in, height_in=height_in),
                 height_in / width_in)
    images = data.images
    if images is None:
        return ReportAssets(None, (), chart)
    tiles = [(images.aligned, "Photo, aligned as scored", True),
             (images.normalized, "Normalised face: the closest normal face the model found", True),
             (images.heatmap_rgb, "Difference heatmap: brighter = larger difference", False)]
    if images.mask_outline_rgb is not None:
        tiles.append((images.mask_outline_rgb, "Scored region (mouth and nose) outlined", True))
    return ReportAssets(
        photo=encode_image(images.overlay_on_photo, 1400, jpeg=True),
        tiles=tuple((encode_image(array, 400, jpeg=jpeg)[0], caption) for array, caption, jpeg in tiles),
        chart=chart,
    )


# --------------------------------------------------------------------------- layout

NAVY, GREY, RED = colors.HexColor("#1f3b5c"), colors.HexColor("#555555"), colors.HexColor(rc.CURRENT_COLOUR)
BANNER = f"{NON_CLINICAL_LABEL} — scores from a non-clinical model"
#: How the report names each part of a score variant (in the vocabulary's order).
METHODS = {HeatmapMethod.PSE: "Squared error (PSE)", HeatmapMethod.LPIPS: "LPIPS", HeatmapMethod.SSIM: "SSIM"}
PROCESSINGS = {Processing.BASE: "RGB", Processing.YCBCR: "YCbCr", Processing.EROSION: "RGB + erosion",
               Processing.YCBCR_EROSION: "YCbCr + erosion"}
REGIONS = {Region.MOUTH_NOSE: "Mouth and nose region", Region.FACE_WITHOUT_EYES: "Whole face without the eyes"}
ORDERS = {ErosionOrder.DIFF_THEN_ERODE: "after differencing (journal order)",
          ErosionOrder.ERODE_THEN_DIFF: "before differencing (arXiv order)"}
#: Most characters of photo text shown per field (the photo's text is hostile: any length).
SHOWN_CHARS = {"name": 80, "id": 64, "issuer": 64, "description": 64, "accession": 16, "footer": 110}
PAGE = {"pagesize": A4, "leftMargin": 15 * mm, "rightMargin": 15 * mm, "topMargin": 22 * mm, "bottomMargin": 18 * mm}


def _styles() -> dict[str, ParagraphStyle]:
    body = ParagraphStyle("body", fontName="Helvetica", fontSize=9, leading=11.5)
    derive = lambda name, **kw: ParagraphStyle(name, parent=body, **kw)  # noqa: E731
    return {"body": body, "cell": derive("cell", fontSize=8, leading=10),
            "cellb": derive("cellb", fontName="Helvetica-Bold", fontSize=8, leading=10),
            "hash": derive("hash", fontSize=7.5, leading=9.5, wordWrap="CJK"),
            "small": derive("small", fontSize=7.5, leading=9.5, textColor=GREY),
            "caption": derive("caption", fontSize=7.5, leading=9, alignment=TA_CENTER, textColor=GREY),
            "label": derive("label", fontSize=8, leading=10, textColor=GREY),
            "title": derive("title", fontName="Helvetica-Bold", fontSize=15, leading=19, textColor=NAVY),
            "h2": derive("h2", fontName="Helvetica-Bold", fontSize=11.5, leading=14, spaceBefore=8,
                         spaceAfter=4, textColor=NAVY),
            "big": derive("big", fontName="Helvetica-Bold", fontSize=20, leading=24),
            "alert": derive("alert", fontName="Helvetica-Bold", fontSize=12, leading=15, textColor=RED)}


def shown(text: str, field: str) -> str:
    """Photo text as the report shows it: control characters removed, cut to ``SHOWN_CHARS[field]`` with "…"."""
    return clean_text(text, SHOWN_CHARS[field], ellipsis="…")


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(rc.markup(text, bold="Bold" in style.fontName), style)


def _b(text: str) -> str:
    """Bold markup for part of a paragraph (pass the whole to Paragraph, not _p)."""
    return f"<b>{rc.markup(text, bold=True)}</b>"


def _grid(rows, widths, extra=()) -> Table:
    table = Table(rows, colWidths=widths)
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), 2),
                               ("BOTTOMPADDING", (0, 0), (-1, -1), 2), *extra]))
    return table


def decorate_page(canvas, doc, data: ReportInput, total: int | None) -> None:
    width, height = A4
    canvas.saveState()
    if data.model.non_clinical:
        canvas.setFillColor(RED)
        canvas.rect(doc.leftMargin, height - 17 * mm, doc.width, 10 * mm, stroke=0, fill=1)
        canvas.setFillColor(colors.white)
        rc.draw_text(canvas, width / 2, height - 13.5 * mm, BANNER, "Helvetica-Bold", 12, align="centre")
    canvas.setFillColor(GREY)
    canvas.setStrokeColor(GREY)
    canvas.line(doc.leftMargin, 13 * mm, width - doc.rightMargin, 13 * mm)
    patient = data.patient
    ident = f"{shown(rc.format_person_name(patient.name), 'name')} · Patient ID {shown(patient.patient_id, 'id')}" + (
        f" ({shown(patient.issuer, 'issuer')})" if patient.issuer else "")
    ident = shown(ident, "footer") + f" · Study date {rc.format_date(data.study.study_date)}"
    rc.draw_text(canvas, doc.leftMargin, 9 * mm, ident, "Helvetica", 8)
    rc.draw_text(canvas, width - doc.rightMargin, 9 * mm, f"Page {doc.page} of {total or '?'}", "Helvetica", 8,
                 align="right")
    canvas.restoreState()


def _header(data: ReportInput, st, width: float) -> Table:
    p, s = data.patient, data.study
    taken = s.acquisition_datetime
    age = rc.format_age(p.birth_date, taken.date() if taken else s.study_date)
    pid = shown(p.patient_id, "id") + (f" (issuer {shown(p.issuer, 'issuer')})" if p.issuer else "")
    rows = [("Patient", shown(rc.format_person_name(p.name), "name"), "Patient ID", pid),
            ("Birth date", rc.format_date(p.birth_date) + (f" (age at photo {age})" if age else ""),
             "Sex", SEX_NAMES[p.sex]),
            ("Study date", rc.format_date(s.study_date) + (f" {s.study_time:%H:%M}" if s.study_time else ""),
             "Accession no.", shown(s.accession, "accession") or "—"),
            ("Study", shown(s.description, "description") or "—", "", ""),
            ("Photo taken", rc.format_datetime(taken), "Report created", rc.format_datetime(data.generated_at))]
    # Photo text may be one long word: break it anywhere (CJK wrapping) rather than overflow the cell.
    wrap = {name: ParagraphStyle(f"{name}-wrap", parent=st[name], wordWrap="CJK") for name in ("cell", "cellb")}
    cells = [[_p(a, st["label"]), _p(b, wrap["cellb" if i == 0 else "cell"]), _p(c, st["label"]),
              _p(d, wrap["cellb" if i == 0 else "cell"])] for i, (a, b, c, d) in enumerate(rows)]
    return _grid(cells, [0.13 * width, 0.39 * width, 0.14 * width, 0.34 * width],
                 [("SPAN", (1, 3), (3, 3)), ("LINEABOVE", (0, 0), (-1, 0), 0.6, GREY),
                  ("LINEBELOW", (0, -1), (-1, -1), 0.6, GREY)])


def _box(rows, st, width: float, colour) -> Table:
    cells = [[_p(a, st["label"]) if isinstance(a, str) else a, _p(b, st["body"]) if isinstance(b, str) else b]
             for a, b in rows]
    return _grid(cells, [0.3 * width, 0.7 * width],
                 [("BOX", (0, 0), (-1, -1), 1.2, colour), ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#f4f7fb")),
                  ("LEFTPADDING", (0, 0), (-1, -1), 6), ("TOPPADDING", (0, 0), (-1, -1), 3),
                  ("BOTTOMPADDING", (0, 0), (-1, -1), 3), ("LINEBELOW", (0, 0), (-1, -2), 0.3, colors.lightgrey)])


def _pose_text(data: ReportInput) -> str:
    parts = [f"{axis} {rc.format_change(value, 1).lstrip('+')}°" for axis, value in data.pose.items()]
    limits = data.model.settings.get("pose_limits") or {}
    yaw, pitch = limits.get("max_yaw"), limits.get("max_pitch")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (yaw, pitch))
    bound = f"; accepted up to ±{yaw:g}° yaw, ±{pitch:g}° pitch" if numbers else ""
    return ", ".join(parts) + f" (0° = facing the camera{bound})"


def _repeats_text(repeats: tuple[float, ...]) -> str:
    """'mean of 3 repeats ± 0.052 (SD)' for a score averaged over K >= 2 normalisations."""
    spread = statistics.stdev(repeats)
    return f"mean of {len(repeats)} repeats ± {rc.format_number(spread, significant_decimals(spread))} (SD)"


def _result(data: ReportInput, st, width: float) -> list:
    score, calibration = data.primary_score, data.calibration
    spread = [_p(_repeats_text(data.primary_repeats), st["body"])] if data.primary_repeats else []
    rows = [("Score S (primary result)", [_p(rc.format_score(score), st["big"]), *spread, _p(
        "Squared error in YCbCr after 3×3 erosion, mouth and nose region, with model adaptation. Higher = closer "
        "to the model's idea of a normal face. No units; no fixed normal range.", st["small"])])]
    rating = "not calibrated: no calibration against human ratings is set up for this model"
    if calibration:
        value, _, rest = rc.format_rating(calibrated_rating(calibration, score)).partition(" ")
        rating = Paragraph(_b(value) + " " + rc.markup(rest), st["body"])
    rows.append(("Calibrated rating, 1–7 scale (1 = most abnormal, 7 = almost normal)", rating))
    points = data.comparable_timeline()
    changes = rc.score_changes(points)
    now = next((point for point in points if point.is_current), None)
    for label, ref, delta in (("first visit (baseline)", changes.baseline, changes.since_baseline),
                              ("previous visit", changes.previous, changes.since_previous)):
        text = "none: this is the first visit scored with this model"
        if delta is not None:
            judged = judge_change(delta, data.repeatability, repeats=(ref.repeats, now.repeats))
            text = _b(rc.format_change(delta)) + rc.markup(
                f" since {rc.format_date(ref.when.date())} (+ = closer to normal)" +
                (f"; {rc.format_change(calibration.slope * delta, 1)} rating points" if calibration else "") +
                f"; {judged.text}")
            text = Paragraph(text, st["body"])
        rows.append((f"Change since {label}", text))
    if data.pose:
        rows.append(("Head pose in the photo", _pose_text(data)))
    if data.notes:
        rows.append(("How the photo was read", " ".join(data.notes)))
    rows.append(("", _p("Not a diagnosis. Read “What the score means and its limits” before using it.", st["small"])))
    return [_p("Result", st["h2"]), _box(rows, st, width, NAVY)]


def _failure(data: ReportInput, st, width: float) -> list:
    advice = ADVICE.get(data.failure_code or "", RETAKE)
    rows = [("What went wrong", data.failure_reason), ("What to do", advice)]
    if data.pose:
        rows.append(("Head pose in the photo", _pose_text(data)))
    if data.notes:
        rows.append(("How the photo was read", " ".join(data.notes)))
    return [_p("No score: this photo could not be appraised", st["alert"]), Spacer(1, 2 * mm),
            _box(rows, st, width, RED), _p("No score was recorded for this visit; earlier visits are unchanged.",
                                           st["small"])]


class _FitImage(Flowable):
    """A picture that fills the space left in the frame (up to max_height), keeping its aspect;
    when less than min_height is left it asks for its full size, so it moves to the next page."""

    def __init__(self, data: bytes, size_px: tuple[int, int], max_height: float, min_height: float) -> None:
        super().__init__()
        self.data, (self.w_px, self.h_px) = data, size_px
        self.max_height, self.min_height = max_height, min_height
        self.draw_w = self.draw_h = 0.0

    def wrap(self, avail_width: float, avail_height: float) -> tuple[float, float]:
        scale = min(avail_width / self.w_px, self.max_height / self.h_px)
        if self.h_px * min(scale, avail_height / self.h_px) >= self.min_height:
            scale = min(scale, avail_height / self.h_px)
        self.draw_w, self.draw_h, self.avail_width = self.w_px * scale, self.h_px * scale, avail_width
        return avail_width, self.draw_h

    def draw(self) -> None:
        self.canv.drawImage(ImageReader(io.BytesIO(self.data)), (self.avail_width - self.draw_w) / 2, 0,
                            self.draw_w, self.draw_h)


def _images(assets: ReportAssets, st, width: float) -> list:
    photo, size = assets.photo
    n = len(assets.tiles)
    side = width / n - 3 * mm
    tiles = _grid([[Image(io.BytesIO(b), side, side) for b, _ in assets.tiles],
                   [_p(caption, st["caption"]) for _, caption in assets.tiles]], [width / n] * n,
                  [("ALIGN", (0, 0), (-1, -1), "CENTER")])
    return [CondPageBreak(90 * mm), _p("Photo with the difference heatmap drawn on it", st["h2"]),
            _p("Colours show where the photo differs from its normalised face; brighter = larger difference. "
               "Only the mouth and nose region counts for the score.", st["small"]), Spacer(1, 1.5 * mm),
            _FitImage(photo, size, max_height=150 * mm, min_height=75 * mm),
            KeepTogether([_p("Aligned photo, normalised face and heatmap", st["h2"]), tiles])]


def _trend(data: ReportInput, assets: ReportAssets, st, width: float) -> list:
    points = data.comparable_timeline()
    heading = _p("Earlier visits" if data.failed else "Score over time", st["h2"])
    left_out = len(data.timeline) - len(points)
    note = (f" {left_out} visit{' was' if left_out == 1 else 's were'} scored with a different model and "
            f"{'is' if left_out == 1 else 'are'} not shown: scores of different models are not comparable."
            if left_out else "")
    if not points:
        return [heading, _p("No earlier scored visits are recorded for this patient with this model." + note,
                            st["body"])]
    caption = ("Each point is one visit's primary score S (mouth and nose region, with model adaptation), in date "
               "order" + ("; the large red point is this visit" if not data.failed else "") + "." +
               (" Right axis: the same scores on the calibrated 1–7 rating scale." if data.calibration else "") + note
               + (" The photo of this report has no score, so it is not in the chart." if data.failed else ""))
    calibration = data.calibration
    head = ["Visit date", "Study", "Score S", *(["Rating (1–7)"] if calibration else []), "Change from previous visit"]
    rows = [[_p(text, st["cellb"]) for text in head]]
    for i, point in enumerate(points):
        change = "—"
        if i > 0:
            delta = point.score - points[i - 1].score
            judged = judge_change(delta, data.repeatability, repeats=(points[i - 1].repeats, point.repeats))
            noise = {True: " (exceeds RC)", False: " (within noise)", None: ""}[judged.exceeds]
            change = rc.format_change(delta) + noise
        rating = [rc.format_number(calibration.rating(point.score), 1)] if calibration else []
        cells = [rc.format_date(point.when.date()) + (" (this visit)" if point.is_current else ""),
                 shown(point.study_description, "description") or "—", rc.format_score(point.score), *rating, change]
        rows.append([_p(text, st["cellb" if point.is_current else "cell"]) for text in cells])
    widths = [0.2, 0.38, 0.12, *([0.12] if calibration else []), 0.18]
    scale = width / sum(widths)
    table = _grid(rows, [w * scale for w in widths], [("LINEBELOW", (0, 0), (-1, 0), 0.6, GREY),
                                                      ("LINEBELOW", (0, -1), (-1, -1), 0.6, GREY)])
    table.repeatRows = 1
    chart_png, aspect = assets.chart
    chart = Image(io.BytesIO(chart_png), width, width * aspect)
    return [KeepTogether([heading, chart, _p(caption, st["small"])]), Spacer(1, 2 * mm), table]


def _meaning(data: ReportInput, st) -> list:
    texts = [
        "S measures how far the mouth and nose region of the photo is from its normalised face, the closest normal "
        "face the model can produce. Higher S = closer to the model's idea of a normal face. S has no units and no "
        "fixed normal range; it is logarithmic: +1.0 means the remaining difference shrank by a factor of about 2.7.",
        "The score is not a diagnosis and does not replace clinical examination. It depends on the photo: head pose, "
        "lighting, expression (smiling, open mouth), focus and anything covering the face all change it. Only frontal "
        "views are valid. Take follow-up photos the same way.",
        "Compare visits of the same patient scored with the same model identity only (shown below); scores from "
        "different models or settings are not comparable.",
        "Research method: Hayajneh A, Shaqfeh M, Serpedin E, Stotland MA. Unsupervised anomaly appraisal of cleft "
        "faces using a StyleGAN2-based model adaptation technique. PLOS ONE 2023;18(8):e0288228 (arXiv 2211.06659). "
        "In the paper the score correlated with mean ratings by human raters (Pearson r = 0.89 on 125 faces). "
        "It is not a validated clinical device.",
    ]
    study = data.repeatability
    if study is not None:
        primary = study.for_variant(PRIMARY_VARIANT)
        shown = lambda value: rc.format_number(value, significant_decimals(value))  # noqa: E731
        figures = "" if primary is None else (
            f" the within-photo SD of S was {shown(primary.within_sd)} and the repeatability coefficient "
            f"RC = 2.77 × SD = {shown(primary.rc)} ({study.confidence * 100:.0f} % interval {shown(primary.rc_low)}"
            f"–{shown(primary.rc_high)});")
        texts.append("Repeatability: appraising the same photo again gives a slightly different S, because the search "
                     f"for the normal face starts from random noise. In a study of {study.photos} photos × "
                     f"{study.repeats} repeats with this model ({rc.format_date(study.created_at.date())}"
                     + (", non-clinical" if study.non_clinical else "") + f"),{figures} two appraisals of one photo "
                     "differ by less than RC in 95 % of cases, so a change smaller than RC is within measurement "
                     "noise (for visits that average several repeats the coefficient shrinks accordingly).")
    else:
        texts.append("No repeatability study is stored for this model, so this report cannot say whether a change "
                     "between visits exceeds measurement noise (a site measures it with `cleftscore repeatability`).")
    if data.calibration:
        c = data.calibration
        formula = f"{rc.format_number(c.intercept, 2)} + {rc.format_number(c.slope, 3)} × S"
        texts.append(f"Calibrated rating = {formula}, fitted on {c.n} rated photos "
                     f"({c.source}, {rc.format_date(c.created_at.date())}); it estimates the mean human rating. The "
                     "interval is a 95 % prediction interval for one photo.")
    return [KeepTogether([_p("What the score means and its limits", st["h2"]),
                          *[_p("• " + text, st["body"]) for text in texts]])]


def _scores_table(data: ReportInput, st, width: float) -> list:
    def rank(member) -> int:
        return list(type(member)).index(member)

    variants = [s.variant for s in data.scores]
    columns = sorted({(v.processing, v.erosion_order) for v in variants},
                     key=lambda c: (rank(c[0]), -1 if c[1] is None else rank(c[1])))
    orders = {v.erosion_order for v in variants if v.erosion_order}
    head = ["Heatmap", "Model adaptation"] + [
        PROCESSINGS[p] + (f" ({ORDERS[o]})" if o and len(orders) > 1 else "") for p, o in columns]
    rows, style = [[_p(text, st["cellb"]) for text in head]], [("LINEBELOW", (0, 0), (-1, 0), 0.6, GREY)]
    values = {s.variant: s.score for s in data.scores}
    for region in sorted({v.region for v in variants}, key=rank):
        style += [("SPAN", (0, len(rows)), (-1, len(rows))), ("BACKGROUND", (0, len(rows)), (-1, len(rows)),
                                                               colors.HexColor("#e8eef5"))]
        rows.append([_p(REGIONS[region], st["cellb"])] + [""] * (len(head) - 1))
        keys = {(v.method, v.adaptation) for v in variants if v.region == region}
        for method, adapted in sorted(keys, key=lambda k: (rank(k[0]), not k[1])):
            row = [_p(METHODS[method], st["cell"]), _p("with" if adapted else "without", st["cell"])]
            for processing, order in columns:
                variant = ScoreVariant(method, processing, region, adapted, order)
                primary = variant == PRIMARY_VARIANT and variant in values
                text = rc.format_score(values[variant]) if variant in values else "—"
                row.append(_p(text, st["cellb" if primary else "cell"]))
                if primary:
                    style.append(("BACKGROUND", (len(row) - 1, len(rows)), (len(row) - 1, len(rows)),
                                  colors.HexColor("#ffe9a8")))
            rows.append(row)
    first, second = 0.2 * width, 0.13 * width
    column = min(0.17 * width, (width - first - second) / len(columns))
    table = _grid(rows, [first, second] + [column] * len(columns), style)
    table.hAlign, table.repeatRows = "LEFT", 1
    note = ("Score S of every variant of the method (paper Table 1); higher = closer to normal. Columns: colour "
            "space compared, and whether the 3×3 erosion was applied. Variants are on different scales: compare a "
            "variant only with the same variant at another visit." +
            (" Highlighted: the primary result." if PRIMARY_VARIANT in values else "") +
            " Model adaptation = the per-photo fine-tuning of the model (paper Algorithm 2).")
    return [CondPageBreak(40 * mm), _p("All score variants (research detail)", st["h2"]), table, _p(note, st["small"])]


def _model(data: ReportInput, st, width: float) -> list:
    m, settings = data.model, data.model.settings
    inversion, adaptation = settings.get("inversion") or {}, settings.get("adaptation") or {}
    orders = ", ".join(ORDERS.get(o, str(o)) for o in settings.get("erosion_orders", []))
    parts = [f"inversion: {inversion['steps']} steps" if "steps" in inversion else "",
             f"model adaptation: {adaptation['steps']} steps" + (f" (learning rate {adaptation['lr']:g})"
                                                                 if "lr" in adaptation else "")
             if "steps" in adaptation else "",
             f"3×3 erosion: {orders}" if orders else "",
             f"face detector: {settings['detector']}" if "detector" in settings else "",
             f"device: {settings['device']}" if "device" in settings else ""]
    timings = " · ".join(f"{stage} {seconds:.1f} s" for stage, seconds in m.timings.items())
    rows = [("Model", m.name + (" (non-clinical: demo or test model)" if m.non_clinical else "")),
            ("Model identity", _p(m.identity, st["hash"])), ("Software version", m.software_version or "—")]
    if not data.failed:
        rows += [("Key settings", "; ".join(p for p in parts if p) or "—"),
                 ("Processing time", timings or "—")]
    cells = [[_p(a, st["label"]), b if not isinstance(b, str) else _p(b, st["cell"])] for a, b in rows]
    return [KeepTogether([_p("Model and processing", st["h2"]), _grid(cells, [0.2 * width, 0.8 * width])])]


def build_story(data: ReportInput, assets: ReportAssets, width: float) -> list:
    """The report's flowables, top to bottom."""
    st = _styles()
    story = [_p("Cleft lip appraisal: photo report", st["title"]), Spacer(1, 2 * mm), _header(data, st, width),
             Spacer(1, 2 * mm)]
    if data.failed:
        return story + _failure(data, st, width) + _trend(data, assets, st, width) + _meaning(data, st) + \
            _model(data, st, width)
    return (story + _result(data, st, width) + _images(assets, st, width) + _trend(data, assets, st, width)
            + _meaning(data, st) + (_scores_table(data, st, width) if data.scores else []) + _model(data, st, width))
