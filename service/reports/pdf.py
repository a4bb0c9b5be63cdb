"""The clinical PDF report of one appraisal (A4, reportlab platypus).

``build_report_pdf(ReportInput) -> bytes``; the input records are in
:mod:`service.reports.request`. The PDF goes into PACS as an Encapsulated PDF and is the
patient's longitudinal record: header, result box (primary score, calibrated 1–7 rating,
change since the first and the previous visit), images, trend chart and visit list,
meaning and limits, all score variants, model identity. A failed appraisal gets a report
saying what went wrong and what to do, with the earlier visits and no scores.
Non-clinical models put a red banner with the non-clinical label on every page. Nothing
here logs.
"""

from __future__ import annotations

import io

from service.reports import charts as rc
from service.reports import layout
from service.reports.request import ReportInput

__all__ = ["build_report_pdf"]


def build_report_pdf(data: ReportInput) -> bytes:
    """The report as PDF bytes (A4). Two layout passes: the first counts pages for "Page X of Y"."""
    from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate

    if not isinstance(data, ReportInput):
        raise TypeError(f"data must be a ReportInput, got {type(data).__name__}")
    rc.ensure_fonts()
    assets = layout.prepare_assets(data)
    total_pages: int | None = None
    for _ in range(3):
        buffer = io.BytesIO()
        doc = BaseDocTemplate(buffer, **layout.PAGE, title="Cleft lip appraisal report" + (
                              f" ({layout.BANNER})" if data.model.non_clinical else ""),
                              author=f"{data.model.name} {data.model.software_version}".strip(),
                              subject="Cleft lip deformity score (research method, Hayajneh et al. 2023)",
                              creator="cleftscore")
        frame = Frame(doc.leftMargin, doc.bottomMargin, doc.width, doc.height, id="body",
                      leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0)
        pages = total_pages
        doc.addPageTemplates([PageTemplate(id="page", frames=[frame],
                                           onPage=lambda canvas, d: layout.decorate_page(canvas, d, data, pages))])
        doc.build(layout.build_story(data, assets, doc.width))
        if total_pages == doc.page:
            return buffer.getvalue()
        total_pages = doc.page
    raise RuntimeError("the page count did not settle after three layout passes")
