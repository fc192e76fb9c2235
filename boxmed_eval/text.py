"""Report text preparation, as in the paper: keep the findings section, normalise whitespace
and special characters. Studies whose findings end up empty are dropped by the adapters,
which count them in the log."""

from __future__ import annotations

import re
import unicodedata

# Section headers of MIMIC-CXR / IU X-Ray free-text reports.
_SECTION_RE = re.compile(
    r"^\s*(?P<name>[A-Z][A-Z /&()-]{2,40}):", re.MULTILINE)
_FINDINGS_NAMES = {"FINDINGS", "FINDING", "FINDINGS AND IMPRESSION", "REPORT"}

# Characters that radiology text contains and that break downstream tools (the METEOR jar,
# CSV readers) or split tokens inconsistently. NFKC does most of the work; these are the rest.
_SPECIAL = {
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
    "\u2212": "-", "\u00d7": "x", "\u00b0": " degrees", "\u2022": " ", "\u00a0": " ",
    "\ufeff": "", "\u200b": "",
}
_SPECIAL_RE = re.compile("|".join(map(re.escape, _SPECIAL)))
_WS_RE = re.compile(r"\s+")
# De-identification placeholders (MIMIC "___", IU "XXXX") are kept as they are: the
# published pipelines keep them, and scores depend on it.


def normalize_text(text: str) -> str:
    """Unicode-normalise, map special characters to ASCII, and collapse all whitespace
    (newlines, tabs) to single spaces."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = _SPECIAL_RE.sub(lambda m: _SPECIAL[m.group(0)], text)
    # Remaining control characters (not whitespace) are dropped.
    text = "".join(ch for ch in text if ch in "\t\n\r " or unicodedata.category(ch)[0] != "C")
    return _WS_RE.sub(" ", text).strip()


def split_sections(report: str) -> dict[str, str]:
    """Split a free-text report into ``{SECTION NAME: text}`` by its upper-case headers.
    Text before the first header goes under ``""``."""
    sections: dict[str, str] = {}
    matches = list(_SECTION_RE.finditer(report))
    if not matches:
        return {"": report}
    if matches[0].start() > 0:
        sections[""] = report[: matches[0].start()]
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(report)
        name = _WS_RE.sub(" ", match.group("name").strip().upper())
        sections[name] = sections.get(name, "") + " " + report[match.end():end]
    return sections


def extract_findings(report: str) -> str:
    """The findings section of a free-text report ("" when it has none)."""
    sections = split_sections(report)
    for name in sections:
        if name in _FINDINGS_NAMES:
            return normalize_text(sections[name])
    return ""


def prepare_findings(text: str | None) -> str:
    """Normalise an already-extracted findings text ("" for None/NaN)."""
    if text is None or isinstance(text, float):
        return ""
    return normalize_text(str(text))
