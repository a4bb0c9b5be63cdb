"""The vocabulary: today's string values, one key order, the primary variant, the label; no heavy imports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest

from pipeline.vocabulary import (
    NON_CLINICAL_LABEL,
    NON_CLINICAL_LABEL_ASCII,
    PRIMARY_VARIANT,
    ErosionOrder,
    HeatmapMethod,
    Processing,
    Region,
    ScoreVariant,
    VariantScore,
    ascii_text,
    find_score,
    heatmap_key,
)


def test_values_are_the_stored_strings():
    # Stored in databases, caches and CSV files: these strings must not change.
    assert [m.value for m in HeatmapMethod] == ["pse", "lpips", "ssim"]
    assert [p.value for p in Processing] == ["base", "ycbcr", "erosion", "ycbcr+erosion"]
    assert [r.value for r in Region] == ["mouth_nose", "face_without_eyes"]
    assert [o.value for o in ErosionOrder] == ["diff_then_erode", "erode_then_diff"]
    assert [p for p in Processing if p.uses_ycbcr] == [Processing.YCBCR, Processing.YCBCR_EROSION]
    assert [p for p in Processing if p.uses_erosion] == [Processing.EROSION, Processing.YCBCR_EROSION]


def test_primary_variant():
    assert PRIMARY_VARIANT.to_dict() == {"method": "pse", "processing": "ycbcr+erosion", "region": "mouth_nose",
                                         "adaptation": True, "erosion_order": "diff_then_erode"}
    assert PRIMARY_VARIANT.key == "pse/ycbcr+erosion/mouth_nose/with/diff_then_erode"
    assert PRIMARY_VARIANT.heatmap_key == "pse/ycbcr+erosion/diff_then_erode"


def test_key_order_and_round_trips():
    variant = ScoreVariant("ssim", "ycbcr+erosion", "face_without_eyes", False, "erode_then_diff")
    assert variant == ScoreVariant(HeatmapMethod.SSIM, Processing.YCBCR_EROSION, Region.FACE_WITHOUT_EYES, False,
                                   ErosionOrder.ERODE_THEN_DIFF)
    assert list(variant.to_dict()) == ["method", "processing", "region", "adaptation", "erosion_order"]
    assert variant.key == "ssim/ycbcr+erosion/face_without_eyes/without/erode_then_diff"
    assert ScoreVariant.from_key(variant.key) == variant
    assert ScoreVariant.from_dict(json.loads(json.dumps(variant.to_dict()))) == variant
    plain = ScoreVariant("pse", "base", "mouth_nose", True, "")  # the database's "no erosion order"
    assert plain.erosion_order is None and plain.key == "pse/base/mouth_nose/with/-"
    assert ScoreVariant.from_key(plain.key) == plain and plain.to_dict()["erosion_order"] is None
    assert len({variant, replace(variant, adaptation=True), variant}) == 2  # hashable, compares by value
    scored = VariantScore(variant, 3)
    assert scored.score == 3.0 and isinstance(scored.score, float)
    assert scored.to_dict() == {**variant.to_dict(), "score": 3.0}
    assert VariantScore.from_dict(scored.to_dict()) == scored
    assert find_score([scored], variant) == 3.0 and find_score([scored], plain) is None


@pytest.mark.parametrize("args, error, match", [
    (("psnr", "base", "mouth_nose", True, None), ValueError, "method must be one of"),
    (("pse", "rgb", "mouth_nose", True, None), ValueError, "processing must be one of"),
    (("pse", "base", "roi", True, None), ValueError, "region must be one of"),
    (("pse", "base", "mouth_nose", 1, None), TypeError, "adaptation must be a bool"),
    (("pse", "base", "mouth_nose", True, "diff_then_erode"), ValueError, "exactly when processing uses erosion"),
    (("pse", "erosion", "mouth_nose", True, None), ValueError, "exactly when processing uses erosion"),
    (("pse", "erosion", "mouth_nose", True, "sideways"), ValueError, "erosion_order must be one of"),
])
def test_bad_variants_are_refused(args, error, match):
    with pytest.raises(error, match=match):
        ScoreVariant(*args)


def test_bad_keys_records_and_scores_are_refused():
    for key in ("pse/base/mouth_nose", "pse/base/mouth_nose/yes/-", 7):
        with pytest.raises(ValueError, match="score variant key"):
            ScoreVariant.from_key(key)
    with pytest.raises(ValueError, match="needs"):
        ScoreVariant.from_dict({"method": "pse", "processing": "base"})
    with pytest.raises(ValueError, match="needs 'score'"):
        VariantScore.from_dict(PRIMARY_VARIANT.to_dict())
    for bad, error in ((math.inf, ValueError), (math.nan, ValueError), (True, TypeError), ("1.0", TypeError)):
        with pytest.raises(error):
            VariantScore(PRIMARY_VARIANT, bad)
    with pytest.raises(TypeError):
        VariantScore(PRIMARY_VARIANT.to_dict(), 1.0)
    with pytest.raises(ValueError):
        heatmap_key(HeatmapMethod.PSE, Processing.BASE, ErosionOrder.DIFF_THEN_ERODE)


def test_non_clinical_label_and_its_ascii_rendering():
    assert NON_CLINICAL_LABEL == "DEMO — NOT FOR CLINICAL USE"
    assert NON_CLINICAL_LABEL_ASCII == "DEMO - NOT FOR CLINICAL USE" == ascii_text(NON_CLINICAL_LABEL)
    assert NON_CLINICAL_LABEL_ASCII.isascii() and "\\" not in NON_CLINICAL_LABEL_ASCII
    assert ascii_text("Zoë – “réglé” 3×3") == 'Zoe - "regle" 3x3'
    with pytest.raises(ValueError, match="no ASCII rendering"):
        ascii_text("ρ ≥ 0.9")


def test_importing_the_vocabulary_imports_neither_numpy_nor_torch():
    code = ("import sys, pipeline.vocabulary, db.records, db.models; "
            "print(sorted(m for m in ('numpy', 'torch', 'scipy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
