"""The method's vocabulary, defined once: score variants, the primary variant, the non-clinical label.

A score variant is one cell of the paper's grid (method.md 6, Table 1), named by five
parts in this order, the only order used anywhere:

    heatmap method × processing × region × model adaptation × erosion order

``erosion_order`` is given exactly when the processing uses the 3×3 erosion. Its string
key is ``"pse/ycbcr+erosion/mouth_nose/with/diff_then_erode"`` (``-`` for no erosion
order, ``with``/``without`` for adaptation); its JSON form is :meth:`ScoreVariant.to_dict`.

Standard library only (no numpy, no torch), so the database layer, the reports and the
command line import it cheaply.
"""

from __future__ import annotations

import enum
import math
import numbers
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_EROSION_ORDER",
    "NON_CLINICAL_LABEL",
    "NON_CLINICAL_LABEL_ASCII",
    "PRIMARY_VARIANT",
    "ErosionOrder",
    "HeatmapMethod",
    "Processing",
    "Region",
    "ScoreVariant",
    "VariantScore",
    "ascii_text",
    "find_score",
    "heatmap_key",
]


class HeatmapMethod(enum.StrEnum):
    """How the photo and its normalised face are compared (method.md 4)."""

    PSE = "pse"
    LPIPS = "lpips"
    SSIM = "ssim"


class Processing(enum.StrEnum):
    """Colour space compared and whether the 3×3 erosion is applied (method.md 3)."""

    BASE = "base"
    YCBCR = "ycbcr"
    EROSION = "erosion"
    YCBCR_EROSION = "ycbcr+erosion"

    @property
    def uses_ycbcr(self) -> bool:
        return self in (Processing.YCBCR, Processing.YCBCR_EROSION)

    @property
    def uses_erosion(self) -> bool:
        return self in (Processing.EROSION, Processing.YCBCR_EROSION)


class Region(enum.StrEnum):
    """The scored regions of the aligned face (method.md 5; :mod:`pipeline.preprocess.masks`)."""

    MOUTH_NOSE = "mouth_nose"
    FACE_WITHOUT_EYES = "face_without_eyes"


class ErosionOrder(enum.StrEnum):
    """Where the 3×3 erosion goes relative to the comparison."""

    #: Journal version (PLOS ONE 2023): "heat-map generation, morphological erosion". Default.
    DIFF_THEN_ERODE = "diff_then_erode"
    #: arXiv version (2211.06659): erode both images, then build the heatmap.
    ERODE_THEN_DIFF = "erode_then_diff"


DEFAULT_EROSION_ORDER = ErosionOrder.DIFF_THEN_ERODE

_NO_ORDER = "-"
_ADAPTATION_WORDS = {True: "with", False: "without"}


def _member(enum_type: type[enum.StrEnum], value: object, name: str) -> Any:
    """``value`` as a member of ``enum_type``; a clear error naming the allowed values otherwise."""
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_type)
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}") from None


def heatmap_key(method: HeatmapMethod, processing: Processing, erosion_order: ErosionOrder | None) -> str:
    """Stable name of one heatmap (no region, no adaptation): "pse/base", "ssim/ycbcr+erosion/diff_then_erode"."""
    method = _member(HeatmapMethod, method, "method")
    processing = _member(Processing, processing, "processing")
    if erosion_order is not None:
        erosion_order = _member(ErosionOrder, erosion_order, "erosion_order")
    if processing.uses_erosion != (erosion_order is not None):
        raise ValueError(f"erosion_order must be given exactly when processing uses erosion: "
                         f"{processing.value!r} with {erosion_order!r}")
    key = f"{method.value}/{processing.value}"
    return key if erosion_order is None else f"{key}/{erosion_order.value}"


@dataclass(frozen=True)
class ScoreVariant:
    """One cell of the grid: method, processing, region, adaptation, erosion order (in that order).

    Strings are accepted for the enum fields and turned into members; ``erosion_order``
    ``""`` means None (how the database stores "no erosion").
    """

    method: HeatmapMethod
    processing: Processing
    region: Region
    adaptation: bool
    erosion_order: ErosionOrder | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", _member(HeatmapMethod, self.method, "method"))
        object.__setattr__(self, "processing", _member(Processing, self.processing, "processing"))
        object.__setattr__(self, "region", _member(Region, self.region, "region"))
        if not isinstance(self.adaptation, bool):
            raise TypeError(f"adaptation must be a bool, got {self.adaptation!r}")
        order = None if self.erosion_order in (None, "") else _member(ErosionOrder, self.erosion_order,
                                                                       "erosion_order")
        object.__setattr__(self, "erosion_order", order)
        heatmap_key(self.method, self.processing, order)  # checks erosion_order against processing

    @property
    def heatmap_key(self) -> str:
        """The name of the heatmap behind this score (see :func:`heatmap_key`)."""
        return heatmap_key(self.method, self.processing, self.erosion_order)

    @property
    def key(self) -> str:
        """"pse/ycbcr+erosion/mouth_nose/with/diff_then_erode"; "pse/base/mouth_nose/without/-"."""
        order = _NO_ORDER if self.erosion_order is None else self.erosion_order.value
        return "/".join((self.method.value, self.processing.value, self.region.value,
                         _ADAPTATION_WORDS[self.adaptation], order))

    @classmethod
    def from_key(cls, key: str) -> ScoreVariant:
        """The variant named by :attr:`key`."""
        parts = key.split("/") if isinstance(key, str) else []
        words = {word: flag for flag, word in _ADAPTATION_WORDS.items()}
        if len(parts) != 5 or parts[3] not in words:
            raise ValueError(f"a score variant key is method/processing/region/with|without/order, got {key!r}")
        method, processing, region, adaptation, order = parts
        return cls(method, processing, region, words[adaptation], None if order == _NO_ORDER else order)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: {"method", "processing", "region", "adaptation", "erosion_order" (None without erosion)}."""
        return {"method": self.method.value, "processing": self.processing.value, "region": self.region.value,
                "adaptation": self.adaptation,
                "erosion_order": None if self.erosion_order is None else self.erosion_order.value}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ScoreVariant:
        """The variant of a :meth:`to_dict` record (extra keys, such as "score", are ignored)."""
        missing = [k for k in ("method", "processing", "region", "adaptation") if k not in record]
        if missing:
            raise ValueError(f"a score variant record needs {missing}")
        return cls(record["method"], record["processing"], record["region"], record["adaptation"],
                   record.get("erosion_order"))


#: The score shown first: PSE, YCbCr + erosion, mouth/nose, with adaptation, eroded after
#: differencing (the journal's order); paper Table 1's best cell.
PRIMARY_VARIANT = ScoreVariant(HeatmapMethod.PSE, Processing.YCBCR_EROSION, Region.MOUTH_NOSE, True,
                               DEFAULT_EROSION_ORDER)


@dataclass(frozen=True)
class VariantScore:
    """The score S of one variant (finite; see :mod:`pipeline.compare.scoring`)."""

    variant: ScoreVariant
    score: float

    def __post_init__(self) -> None:
        if not isinstance(self.variant, ScoreVariant):
            raise TypeError(f"variant must be a ScoreVariant, got {type(self.variant).__name__}")
        if isinstance(self.score, bool) or not isinstance(self.score, numbers.Real):
            raise TypeError(f"score must be a real number, got {type(self.score).__name__}")
        value = float(self.score)
        if not math.isfinite(value):
            raise ValueError(f"score must be finite, got {value!r}")
        object.__setattr__(self, "score", value)

    def to_dict(self) -> dict[str, Any]:
        """The variant's JSON form with "score" added."""
        return {**self.variant.to_dict(), "score": self.score}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> VariantScore:
        if "score" not in record:
            raise ValueError("a score record needs 'score'")
        return cls(ScoreVariant.from_dict(record), record["score"])


def find_score(scores: Iterable[VariantScore], variant: ScoreVariant) -> float | None:
    """The score of ``variant`` among ``scores``, or None when it was not computed."""
    return next((item.score for item in scores if item.variant == variant), None)


#: Shown beside every output of a non-clinical (demo or test) model bundle.
NON_CLINICAL_LABEL = "DEMO — NOT FOR CLINICAL USE"

#: Typographic characters and their ASCII stand-ins (the rest is decomposed by NFKD).
_ASCII_STAND_INS = str.maketrans({"\u2014": "-", "\u2013": "-", "\u2212": "-", "\u2018": "'", "\u2019": "'",
                                  "\u201c": '"', "\u201d": '"', "\u00d7": "x"})


def ascii_text(text: str) -> str:
    """``text`` in plain ASCII, for DICOM strings whose character set may be the default
    repertoire (ISO-IR 6): dashes become "-", quotes plain quotes, accents are dropped.
    Raises ValueError when a character has no ASCII stand-in."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII_STAND_INS))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    if not plain.isascii():
        raise ValueError(f"no ASCII rendering for {sorted({c for c in plain if not c.isascii()})}")
    return plain


#: :data:`NON_CLINICAL_LABEL` for DICOM strings: "DEMO - NOT FOR CLINICAL USE".
NON_CLINICAL_LABEL_ASCII = ascii_text(NON_CLINICAL_LABEL)
