"""The last-resort failure report: a one-page PDF that cannot fail on the photo's text.

Used when the full report (:mod:`service.reports.pdf`) could not be built, so that the PACS
still learns that the photo was received and why it has no score. It shows no patient text
at all (the DICOM object that carries it names the patient and study): only the failure
reason and advice (our own sentences), the photo's SOP Instance UID (digits and dots) and
the model. Drawn on a bare reportlab canvas in Helvetica, with anything outside Latin-1
replaced, so neither fonts nor layout can fail.
"""

from __future__ import annotations

import datetime as dt
import io
import textwrap

__all__ = ["build_minimal_report_pdf"]


def _latin1(text: str) -> str:
    return str(text).encode("latin-1", errors="replace").decode("latin-1")


def build_minimal_report_pdf(*, reason: str, advice: str, photo_uid: str, model: str, non_clinical: bool,
                             generated_at: dt.datetime) -> bytes:
    """A one-page A4 PDF: "No score: this photo could not be appraised", the reason and advice,
    the photo's SOP Instance UID, the model and the time. Every argument is our own text or an id."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas

    if generated_at.utcoffset() is None:
        raise ValueError("generated_at must be time-zone aware")
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=True)
    canvas.setTitle("Cleft lip appraisal report" + (" (DEMO - NOT FOR CLINICAL USE)" if non_clinical else ""))
    width, height = A4
    y = height - 25 * mm
    if non_clinical:
        canvas.setFillColorRGB(0.78, 0, 0)
        canvas.rect(15 * mm, y - 2 * mm, width - 30 * mm, 10 * mm, stroke=0, fill=1)
        canvas.setFillColorRGB(1, 1, 1)
        canvas.setFont("Helvetica-Bold", 12)
        canvas.drawCentredString(width / 2, y + 1 * mm, "DEMO - NOT FOR CLINICAL USE")
        canvas.setFillColorRGB(0, 0, 0)
        y -= 16 * mm
    canvas.setFont("Helvetica-Bold", 15)
    canvas.drawString(15 * mm, y, "Cleft lip appraisal: photo report")
    y -= 10 * mm
    canvas.setFont("Helvetica-Bold", 12)
    canvas.setFillColorRGB(0.78, 0, 0)
    canvas.drawString(15 * mm, y, "No score: this photo could not be appraised")
    canvas.setFillColorRGB(0, 0, 0)
    y -= 9 * mm
    sections = [("What went wrong", reason), ("What to do", advice),
                ("Patient and study", "As in the header of this DICOM document (copied from the photo). "
                                      "This short report is shown because the full report could not be made."),
                ("Photo (SOP Instance UID)", photo_uid), ("Model", model),
                ("Report created", generated_at.isoformat(timespec="seconds"))]
    for label, text in sections:
        canvas.setFont("Helvetica-Bold", 9)
        canvas.drawString(15 * mm, y, _latin1(label))
        y -= 5 * mm
        canvas.setFont("Helvetica", 9)
        for line in textwrap.wrap(_latin1(text), 105, break_long_words=True)[:12]:
            canvas.drawString(15 * mm, y, line)
            y -= 4.5 * mm
        y -= 3 * mm
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()
