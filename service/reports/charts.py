"""Numbers, text and the trend chart for the PDF report (:mod:`service.reports.pdf`).

Everything here is pure: records in, strings / numbers / PNG bytes out. The
records live in :mod:`service.reports.request` (TimelinePoint) and
:mod:`db.records` (Calibration); the calibrated rating and its prediction interval
come from :func:`service.research.calibration.calibrated_rating`.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

from db.records import Calibration
from service.reports.request import TimelinePoint, ordered_timeline
from service.research.calibration import CalibratedRating

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Font used for characters Helvetica (WinAnsi / cp1252) cannot show, e.g. "ρ", "≥", "−", "Ł".
FALLBACK_FONT = "DejaVuSans"
FALLBACK_FONT_BOLD = "DejaVuSans-Bold"
MINUS = "\u2212"
#: Colours shared by the chart and the PDF (matplotlib hex).
CURRENT_COLOUR = "#c0392b"
LINE_COLOUR = "#1f4e79"
CHART_SIZE_IN = (7.0, 2.6)

_font_lock = threading.Lock()


# --------------------------------------------------------------------------- text


def format_date(value: date | None) -> str:
    """'05 Mar 2024' (English month names whatever the locale); '—' for None."""
    if value is None:
        return "—"
    return f"{value.day:02d} {MONTHS[value.month - 1]} {value.year:04d}"


def format_datetime(value: datetime | None) -> str:
    """'05 Mar 2024 14:32 (UTC+01:00)' in the value's own time zone; '—' for None."""
    if value is None:
        return "—"
    offset = value.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else MINUS
    zone = f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return f"{format_date(value.date())} {value.hour:02d}:{value.minute:02d} ({zone})"


def format_score(score: float) -> str:
    """The machine score S as printed everywhere in the report: two decimals."""
    return format_number(score, 2)


def format_number(value: float, decimals: int) -> str:
    """Plain fixed-point number with a typographic minus: '−0.50'."""
    return f"{value:.{decimals}f}".replace("-", MINUS)


def format_change(change: float, decimals: int = 2) -> str:
    """Signed difference: '+0.42', '−0.42', '0.00' (a zero after rounding has no sign)."""
    text = f"{abs(change):.{decimals}f}"
    if float(text) == 0.0:
        return text
    return ("+" if change > 0 else MINUS) + text


def format_age(birth: date | None, on: date | None) -> str:
    """Age on a date: '7 months', '3 years 2 months'; '' when unknown or negative."""
    if birth is None or on is None:
        return ""
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    if months < 0:
        return ""
    if months < 24:
        return f"{months} month" + ("" if months == 1 else "s")
    return f"{months // 12} years {months % 12} month" + ("" if months % 12 == 1 else "s")


def format_person_name(name: str) -> str:
    """DICOM PN 'Family^Given^Middle^Prefix^Suffix' → 'Family, Given Middle'; '—' if empty."""
    groups = [group for group in name.split("=") if group.strip("^ ")]
    if not groups:
        return "—"
    parts = [part.strip() for part in groups[0].split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    rest = " ".join(p for p in (prefix, given, middle) if p)
    text = ", ".join(p for p in (family, rest) if p)
    return f"{text}, {suffix}" if suffix else text


def _helvetica_can_show(char: str) -> bool:
    try:
        char.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return char.isprintable()


def text_runs(text: str) -> list[tuple[str, bool]]:
    """Split text into (run, needs_fallback_font) pieces."""
    runs: list[tuple[str, bool]] = []
    for char in text:
        fallback = not _helvetica_can_show(char)
        if runs and runs[-1][1] == fallback:
            runs[-1] = (runs[-1][0] + char, fallback)
        else:
            runs.append((char, fallback))
    return runs


def markup(text: str, *, bold: bool = False) -> str:
    """Escape text for a reportlab Paragraph and route characters Helvetica lacks to DejaVu Sans
    (bold: DejaVu Sans Bold, for text set in a bold style or inside <b>)."""
    face = FALLBACK_FONT_BOLD if bold else FALLBACK_FONT
    pieces = []
    for run, fallback in text_runs(str(text)):
        safe = escape(run)
        pieces.append(f'<font face="{face}">{safe}</font>' if fallback else safe)
    return "".join(pieces)


def ensure_fonts() -> None:
    """Register DejaVu Sans (bundled with matplotlib) with reportlab, once per process."""
    import matplotlib
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    with _font_lock:
        if FALLBACK_FONT in pdfmetrics.getRegisteredFontNames():
            return
        folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        faces = {(0, 0): "DejaVuSans", (1, 0): "DejaVuSans-Bold",
                 (0, 1): "DejaVuSans-Oblique", (1, 1): "DejaVuSans-BoldOblique"}
        for name in faces.values():
            pdfmetrics.registerFont(TTFont(name, str(folder / f"{name}.ttf")))
        for (bold, italic), name in faces.items():
            addMapping(FALLBACK_FONT, bold, italic, name)


def draw_text(canvas, x: float, y: float, text: str, font: str, size: float, *, align: str = "left") -> None:
    """Draw one line on a reportlab canvas, switching to DejaVu for characters Helvetica lacks."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    bold = "Bold" in font
    runs = [(run, (FALLBACK_FONT_BOLD if bold else FALLBACK_FONT) if fb else font) for run, fb in text_runs(text)]
    width = sum(stringWidth(run, name, size) for run, name in runs)
    x = {"left": x, "right": x - width, "centre": x - width / 2}[align]
    for run, name in runs:
        canvas.setFont(name, size)
        canvas.drawString(x, y, run)
        x += stringWidth(run, name, size)


# --------------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class ScoreChange:
    """Change of the current visit's score; None where there is nothing to compare with."""

    visits: int
    baseline: TimelinePoint | None
    previous: TimelinePoint | None
    since_baseline: float | None
    since_previous: float | None


def score_changes(points: Sequence[TimelinePoint]) -> ScoreChange:
    """Current score minus the first visit's (baseline) and minus the visit just before it."""
    ordered = ordered_timeline(points)
    current = [i for i, point in enumerate(ordered) if point.is_current]
    if not current or current[0] == 0:
        return ScoreChange(len(ordered), None, None, None, None)
    now = ordered[current[0]]
    baseline, previous = ordered[0], ordered[current[0] - 1]
    return ScoreChange(len(ordered), baseline, previous, now.score - baseline.score, now.score - previous.score)


def format_rating(rating: CalibratedRating) -> str:
    """'4.2 (95 % prediction interval 3.1–5.3)', the interval clipped to the 1–7 scale."""
    low, high = max(1.0, rating.low), min(7.0, rating.high)
    text = f"{rating.value:.1f} ({rating.level * 100:.0f} % prediction interval {low:.1f}–{high:.1f})"
    if rating.outside_scale:
        text += "; the estimate lies outside the 1–7 scale (extrapolation), treat with caution"
    return text.replace("-", MINUS)


# --------------------------------------------------------------------------- chart


@dataclass(frozen=True)
class TimelineChartData:
    """What the trend chart plots: visits in date order (local wall-clock dates)."""

    when: tuple[datetime, ...]  # naive, the visit's own local time
    scores: tuple[float, ...]
    current_index: int | None


def timeline_chart_data(points: Sequence[TimelinePoint]) -> TimelineChartData:
    ordered = ordered_timeline(points)
    current = [i for i, point in enumerate(ordered) if point.is_current]
    return TimelineChartData(
        when=tuple(point.when.replace(tzinfo=None) for point in ordered),
        scores=tuple(point.score for point in ordered),
        current_index=current[0] if current else None,
    )


def _spaced_ticks(positions: Sequence[float], min_gap: float) -> list[float]:
    """Positions at least min_gap apart, left to right; the latest position is always kept."""
    ticks: list[float] = []
    for value in sorted(set(positions)):
        if ticks and value - ticks[-1] < min_gap:
            if value == max(positions):
                ticks[-1] = value
            continue
        ticks.append(value)
    return ticks


def render_timeline_png(
    points: Sequence[TimelinePoint],
    calibration: Calibration | None,
    *,
    width_in: float = CHART_SIZE_IN[0],
    height_in: float = CHART_SIZE_IN[1],
    dpi: int = 200,
) -> bytes:
    """The score-over-time chart as PNG bytes (matplotlib Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, date2num, num2date
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter

    data = timeline_chart_data(points)
    if not data.scores:
        raise ValueError("the timeline is empty: nothing to chart")
    figure = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    x = [date2num(when) for when in data.when]
    axes.plot(x, data.scores, "-o", color=LINE_COLOUR, markersize=5, linewidth=1.5, label="visit", zorder=2)
    if data.current_index is not None:
        i = data.current_index
        axes.plot([x[i]], [data.scores[i]], "o", markersize=11, markerfacecolor=CURRENT_COLOUR,
                  markeredgecolor="black", label="this visit", zorder=3)
    if len(x) <= 8:
        for xi, score in zip(x, data.scores):
            axes.annotate(format_score(score), (xi, score), textcoords="offset points", xytext=(0, 9),
                          ha="center", fontsize=8)
    low, high = min(data.scores), max(data.scores)
    pad = max(0.25 * (high - low), 0.3)
    axes.set_ylim(low - pad, high + 1.6 * pad)
    span = max(x) - min(x)
    axes.set_xlim(min(x) - max(0.08 * span, 20), max(x) + max(0.08 * span, 20))
    if len(x) <= 12:  # label the visit dates themselves, skipping any too close to fit
        axes.xaxis.set_major_locator(FixedLocator(_spaced_ticks(x, 0.14 * (axes.get_xlim()[1] - axes.get_xlim()[0]))))
    else:
        axes.xaxis.set_major_locator(AutoDateLocator(maxticks=7))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: format_date(num2date(value).date())))
    axes.tick_params(axis="x", labelsize=8, labelrotation=20)
    axes.tick_params(axis="y", labelsize=8)
    axes.set_ylabel("Score S\n(higher = closer to normal)", fontsize=8)
    axes.grid(True, color="#dddddd", linewidth=0.6)
    axes.legend(loc="upper left", fontsize=8, frameon=False, ncol=2)
    if len(x) == 1:
        axes.text(0.98, 0.06, "One visit so far: trends start with the second visit.", transform=axes.transAxes,
                  ha="right", fontsize=8, style="italic")
    if calibration is not None:
        a, b = calibration.intercept, calibration.slope
        right = axes.secondary_yaxis("right", functions=(calibration.rating, lambda r: (r - a) / b))
        right.set_ylabel("Calibrated rating\n(1–7 scale)", fontsize=8)
        right.tick_params(labelsize=8)
    figure.tight_layout(pad=0.4)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()

