"""archive.text: NFC storage form and diacritic-, case- and order-free name keys."""

from __future__ import annotations

import unicodedata

import pytest

from archive.text import fold, name_key, name_tokens, nfc

AN = "AN NGUYEN VAN"


@pytest.mark.parametrize(
    "name",
    [
        "Nguyễn^Văn An",
        "NGUYEN^VAN^AN",
        "Nguyen Van An",
        "An Nguyễn Văn",
        "nguyen^van an",
        "Nguyễn^Văn^An^^",
        "  Nguyễn   Văn,An ",
        "NGUYỄN=VĂN AN",
    ],
)
def test_vietnamese_name_forms_share_one_key(name: str) -> None:
    assert name_key(name) == AN


def test_name_tokens_keep_the_given_order() -> None:
    assert name_tokens("Nguyễn^Văn An") == ["NGUYEN", "VAN", "AN"]
    assert name_tokens("An Nguyễn Văn") == ["AN", "NGUYEN", "VAN"]
    assert name_tokens("Lê^Thị Hồng Nhung") == ["LE", "THI", "HONG", "NHUNG"]
    assert name_tokens("") == []
    assert name_tokens("^^=") == []


@pytest.mark.parametrize("d", ["Đ", "đ", "Ð", "ð"])
def test_d_with_stroke_and_eth_fold_to_d(d: str) -> None:
    assert fold(d) == "D"
    assert name_key(f"Trần^Thị {d}ào") == "DAO THI TRAN"


def test_fold_examples() -> None:
    assert fold("Nguyễn^Văn Đào") == "NGUYEN^VAN DAO"
    assert fold("Phạm Thị Ánh Tuyết") == "PHAM THI ANH TUYET"
    assert fold("ỨNG Ưu Ơn") == "UNG UU ON"
    # Separators survive folding; only marks and case go.
    assert fold("a^b=c d") == "A^B=C D"


def test_nfc_and_nfd_input_give_the_same_results() -> None:
    composed = "Nguyễn^Văn Đào"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert nfc(decomposed) == composed
    assert fold(decomposed) == fold(composed)
    assert name_key(decomposed) == name_key(composed) == "DAO NGUYEN VAN"
    assert name_tokens(decomposed) == name_tokens(composed)


def test_tone_marks_distinguish_names_until_folded() -> None:
    # Ngô, Ngộ and Ngo are different names in Vietnamese; the stored (NFC) text
    # keeps them apart, the folded key deliberately does not (folding widens).
    names = ["Ngô^Bảo Châu", "Ngộ^Bão Chầu", "Ngo^Bao Chau"]
    assert len({nfc(n) for n in names}) == 3
    assert {name_key(n) for n in names} == {"BAO CHAU NGO"}


def test_key_is_order_free_but_not_length_free() -> None:
    assert name_key("Van An Nguyen") == name_key("Nguyen Van An")
    assert name_key("Nguyen Van") != name_key("Nguyen Van An")
    # Repeated words count: "Thị Thị" is not "Thị".
    assert name_key("Le Thi Thi") != name_key("Le Thi")
