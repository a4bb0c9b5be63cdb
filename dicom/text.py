"""Text from received DICOM objects, which is hostile: any length, any bytes, any character set.

``read_text`` decodes one element with the object's declared Specific Character Set
(0008,0005); where that is missing, unknown or does not fit the bytes it falls back
safely (UTF-8 when the bytes are valid UTF-8, else Latin-1, undecodable bytes shown
as U+FFFD) and says so in ``TextValue.note``, a sentence for the report. It never
raises for the element's content. ``clean_text`` removes control characters and
bounds the length. ``result_character_set`` picks a Specific Character Set that is
valid for the objects we send back.

Hand-written on top of pydicom's codec table because pydicom's own decoding warns
(with the value in the message) instead of telling the caller what it did.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from pydicom.charset import decode_bytes, python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

#: Longest value of each text VR, in characters (PS3.5 table 6.2-1); PN per component group.
VR_MAX_CHARS = {"AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "LT": 10240,
                "PN": 64, "SH": 16, "ST": 1024, "TM": 14, "UC": 1024, "UI": 64, "UR": 1024, "UT": 10240}
#: ISO 2022 code-extension terms that may not stand alone or first (multi-byte sets).
_MULTI_BYTE_EXTENSIONS = {"ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58"}
#: Bidirectional overrides and isolates: they would reorder what a report shows.
_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_ESC = 0x1B


@dataclass(frozen=True)
class TextValue:
    """A decoded element: ``text`` (None when absent or empty), and a sentence when decoding fell back."""

    text: str | None
    note: str | None = None


def declared_character_set(ds: Dataset) -> tuple[str, ...]:
    """The terms of ``ds``'s Specific Character Set, as sent (stripped); () when absent or unreadable."""
    element = _element(ds, "SpecificCharacterSet")
    if element is None:
        return ()
    value = element.value
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("ascii", errors="replace")
    elif isinstance(value, (list, tuple, MultiValue)):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value or "")
    terms = tuple(term.strip(" \x00") for term in text.split("\\"))
    return () if terms in ((), ("",)) else terms


def character_set_is_known(terms: tuple[str, ...]) -> bool:
    """True when pydicom has a codec for every term (an empty first term means the default repertoire)."""
    return all(term in python_encoding for term in terms)


def result_character_set(terms: tuple[str, ...]) -> str | list[str] | None:
    """A valid Specific Character Set for objects that copy text decoded from a source declaring ``terms``.

    The source's own value when it is valid DICOM (a known single set that is not an ISO 2022
    multi-byte extension, or code extensions led by a single-byte one); ``None`` for the
    default repertoire; else ``"ISO_IR 192"`` (UTF-8), which can hold any decoded text.
    """
    if not terms:
        return None
    if not character_set_is_known(terms):
        return "ISO_IR 192"
    if len(terms) == 1:
        term = terms[0]
        if term == "" or term == "ISO_IR 6":
            return None
        if term.startswith("ISO 2022"):
            return "ISO_IR 192"
        return term
    if terms[0] in _MULTI_BYTE_EXTENSIONS or not all(t == "" or t.startswith("ISO 2022") for t in terms):
        return "ISO_IR 192"
    return list(terms)


def read_text(ds: Dataset, keyword: str | int, *, character_set: tuple[str, ...] | None = None) -> TextValue:
    """The text of element ``keyword`` (or tag) of ``ds`` (multiple values joined by backslash), cleaned of
    control characters but not shortened. ``character_set``: the terms to decode with (default: ``ds``'s
    own; a sequence item passes its parent's). Never raises for hostile content."""
    element = _element(ds, keyword)
    if element is None or element.value is None:
        return TextValue(None)
    value = element.value
    if isinstance(value, (bytes, bytearray)):
        terms = declared_character_set(ds) if character_set is None else character_set
        text, note = _decode(bytes(value), terms, _vr(element))
    elif isinstance(value, (list, tuple, MultiValue)):
        text, note = "\\".join(str(v) for v in value), None
    else:
        text, note = str(value), None
    text = clean_text(text)
    return TextValue(text or None, note if text else None)


def clean_text(text: str, max_chars: int | None = None, *, ellipsis: str = "") -> str:
    """``text`` without control, bidi-override or unassigned characters, padding (NUL/space) stripped,
    and at most ``max_chars`` characters (the last of them ``ellipsis`` when it was cut)."""
    kept = "".join(c for c in str(text) if unicodedata.category(c) not in ("Cc", "Cs", "Cn")
                   and c not in _BIDI_CONTROLS)
    kept = kept.strip()
    if max_chars is not None and len(kept) > max_chars:
        kept = kept[: max(0, max_chars - len(ellipsis))].rstrip() + ellipsis
    return kept


def clean_person_name(text: str) -> str:
    """A PN value cleaned, at most three component groups of at most 64 characters each."""
    groups = clean_text(text).split("=")[:3]
    return "=".join(group[: VR_MAX_CHARS["PN"]] for group in groups)


def has_control_characters(text: str) -> bool:
    """True when ``text`` holds a control character other than trailing NUL/space padding."""
    return any(unicodedata.category(c) == "Cc" for c in str(text).rstrip("\x00 "))


def _element(ds: Dataset, keyword: str | int):
    try:
        return ds.get_item(keyword)
    except Exception:  # noqa: BLE001 - a malformed element is treated as absent
        return None


def _vr(element) -> str:
    if element.VR:
        return str(element.VR)
    try:
        return dictionary_VR(element.tag)
    except KeyError:
        return ""


def _decode(raw: bytes, terms: tuple[str, ...], vr: str) -> tuple[str, str | None]:
    raw = raw.rstrip(b"\x00 ")
    if not raw:
        return "", None
    shown = clean_text("\\".join(terms), 64)
    if raw.isascii() and _ESC not in raw:
        return raw.decode("ascii"), None  # plain ASCII reads the same in every DICOM character set
    if not terms:
        return _fallback(raw, "the photo declares no character set (0008,0005) but its text is not plain ASCII")
    if not character_set_is_known(terms):
        return _fallback(raw, f"the photo's character set (0008,0005) {shown!r} is not a known DICOM character set")
    encodings = [python_encoding[term] for term in terms]
    try:
        if _ESC in raw or len(encodings) > 1:
            delimiters = {ord("^"), ord("=")} if vr == "PN" else {ord("\\")}
            text = decode_bytes(raw, encodings, delimiters)
        else:
            text = raw.decode(encodings[0])
    except (UnicodeDecodeError, LookupError, ValueError):
        return _fallback(raw, f"the photo's text does not fit its declared character set {shown!r}")
    if "\ufffd" in text and "\ufffd".encode("utf-8") not in raw:
        return _fallback(raw, f"the photo's text does not fit its declared character set {shown!r}")
    return text, None


def _fallback(raw: bytes, why: str) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), f"{_sentence(why)}; it was read as UTF-8, so some letters may be wrong."
    except UnicodeDecodeError:
        return raw.decode("latin-1"), f"{_sentence(why)}; it was read as Latin-1, so some letters may be wrong."


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
