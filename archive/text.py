"""Text normalisation for storage and for diacritic-insensitive name matching.

Text is stored NFC-normalised, so the same name typed on two systems compares
equal byte for byte. For matching, names are *folded*: decomposed (NFD),
combining marks dropped, Đ/đ mapped to D explicitly (Unicode gives Đ no
decomposition, so NFD alone leaves it alone) and upper-cased. Folding is only
ever used to widen a search; it never decides that two patients are the same.
"""

from __future__ import annotations

import re
import unicodedata

# Đ (U+0110) is the Vietnamese letter; Ð (U+00D0, Icelandic eth) looks the same
# and turns up in names converted from legacy VNI/TCVN3 encodings.
_EXTRA_FOLDS = str.maketrans({"Đ": "D", "đ": "D", "Ð": "D", "ð": "D"})

# PN components (^), component groups (=), and whatever else people put
# between the parts of a name.
_NAME_SPLIT = re.compile(r"[\^=\s,]+")


def nfc(value: str) -> str:
    """NFC-normalise text before it is stored or compared."""
    return unicodedata.normalize("NFC", value)


def fold(value: str) -> str:
    """Strip diacritics and case: ``"Nguyễn^Văn Đào"`` becomes ``"NGUYEN^VAN DAO"``."""
    decomposed = unicodedata.normalize("NFD", value.translate(_EXTRA_FOLDS))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.upper()


def name_tokens(person_name: str) -> list[str]:
    """The folded words of a person name, in the order given.

    ``"Nguyễn^Văn An"``, ``"NGUYEN^VAN^AN"`` and ``"Nguyen Van An"`` all give
    ``["NGUYEN", "VAN", "AN"]``.
    """
    return [t for t in _NAME_SPLIT.split(fold(person_name)) if t]


def name_key(person_name: str) -> str:
    """An order-free key for a person name: its folded words, sorted.

    Vietnamese systems send the family name first, last, in one component or
    split three ways; sorting the words makes all of these the same key, so an
    exact name search is a single indexed equality.
    """
    return " ".join(sorted(name_tokens(person_name)))

