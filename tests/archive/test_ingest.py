"""Archive.ingest: what lands on disk and in the index, and what is refused.

Real SQLite and real files throughout; index failures are produced by real
database conditions (a dropped table, a page limit, a trigger).
"""

from __future__ import annotations

import hashlib
import io
import threading
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)
from sqlalchemy import event, text

from archive import (
    Archive,
    Expected,
    InvalidInstance,
    Origin,
    SOPClassMismatch,
    StorageFull,
    StorageUnavailable,
    StoreStatus,
)
from archive.db import Database, make_engine, migrate
from archive.part10 import file_meta_bytes
from archive.query import Level, Query
from storage import FilesystemStore, PutResult, Readable
from tests.archive.helpers import (
    ORIGIN,
    bare,
    dataset_bytes,
    ingest,
    ingest_ds,
    make_dataset,
    other_ids,
    part10,
    stored_files,
    stored_keys,
    table_rows,
    uid,
)
from tests.conftest import CT_FILES, DX_FILE, US_FILES
from tests.conftest import testdata as bundled
from tests.conftest import both_index_backends as index_backend  # noqa: F401  (SQLite and PostgreSQL)

INDEX_TABLES = ("patient", "study", "series", "instance", "patient_identifier", "name_token",
                "series_request", "duplicate_conflict")  # fmt: skip


def assert_nothing_indexed(archive: Archive) -> None:
    for table in INDEX_TABLES:
        assert table_rows(archive, table) == [], table


def read_object(archive: Archive, key: str) -> bytes:
    with archive.objects.open(key) as f:
        return f.read()


# --- what is stored -------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                                  "image_dfl.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"])  # fmt: skip
def test_stored_object_is_our_meta_plus_the_received_dataset(archive: Archive, name: str) -> None:
    data = bundled(name).read_bytes()
    original = dcmread(io.BytesIO(data), stop_before_pixels=True)
    result = ingest(archive, data)
    assert result.status is StoreStatus.STORED
    assert result.sop_instance_uid == original.SOPInstanceUID
    assert result.transfer_syntax_uid == original.file_meta.TransferSyntaxUID

    [row] = table_rows(archive, "instance")
    stored = read_object(archive, row["storage_key"])
    meta = file_meta_bytes(original.SOPClassUID, original.SOPInstanceUID,
                           original.file_meta.TransferSyntaxUID)  # fmt: skip
    assert stored[: len(meta)] == meta
    assert stored[len(meta) :] == dataset_bytes(data)  # byte for byte as received
    assert row["sha256"] == hashlib.sha256(stored).hexdigest()
    assert row["size_bytes"] == len(stored) == result.size == archive.objects.size(row["storage_key"])
    assert row["transfer_syntax_uid"] == original.file_meta.TransferSyntaxUID
    assert row["sop_class_uid"] == original.SOPClassUID
    assert row["calling_ae"] == "MODALITY1" and row["peer_address"] == "127.0.0.1"
    assert row["storage_key"].startswith(f"{original.StudyInstanceUID}/{original.SeriesInstanceUID}/"
                                         f"{original.SOPInstanceUID}.")  # fmt: skip
    back = dcmread(io.BytesIO(stored))
    assert back.SOPInstanceUID == original.SOPInstanceUID
    assert back.file_meta.ImplementationVersionName == "MINIPACS_01"


def test_bare_dataset_is_stored_behind_a_file_meta(archive: Archive) -> None:
    ds = make_dataset(pixel_bytes=1024)
    data = bare(ds)
    result = ingest(archive, data)
    assert result.status is StoreStatus.STORED
    assert result.transfer_syntax_uid == ImplicitVRLittleEndian
    [row] = table_rows(archive, "instance")
    stored = read_object(archive, row["storage_key"])
    assert dataset_bytes(stored) == data
    assert dcmread(io.BytesIO(stored)).PixelData == ds.PixelData


def test_large_values_are_kept_and_indexed(archive: Archive) -> None:
    # Values far beyond what the header parse reads eagerly: a private blob and
    # a long comment (implicit VR, where LT may exceed 64 KB).
    ds = make_dataset(PatientComments="Ghi chú " * 40_000)
    ds.add_new(0x00091010, "LO", "MINIPACS TEST")
    ds.add_new(0x00091011, "OB", bytes(range(256)) * 2000)
    data = bare(ds)
    assert ingest(archive, data).status is StoreStatus.STORED
    [row] = table_rows(archive, "instance")
    assert dataset_bytes(read_object(archive, row["storage_key"])) == data
    [patient] = table_rows(archive, "patient")
    assert patient["attrs"]["00104000"]["Value"] == [("Ghi chú " * 40_000).strip()]


def test_read_dataset_round_trip(archive: Archive) -> None:
    ds = make_dataset(pixel_bytes=512)
    ingest_ds(archive, ds)
    [ref] = archive.instances(Query(Level.IMAGE))
    assert ref.sop_instance_uid == ds.SOPInstanceUID
    assert ref.study_instance_uid == ds.StudyInstanceUID
    assert ref.transfer_syntax_uid == ExplicitVRLittleEndian
    back = archive.read_dataset(ref)
    assert str(back.PatientName) == "Nguyễn^Văn An"
    assert back.PixelData == ds.PixelData


def test_missing_object_is_not_found(archive: Archive) -> None:
    from archive import NotFound

    ingest_ds(archive, make_dataset())
    [ref] = archive.instances(Query(Level.IMAGE))
    archive.objects.delete(ref.storage_key)
    with pytest.raises(NotFound):
        archive.open_instance(ref)


# --- resends ---------------------------------------------------------------------


def test_same_bytes_twice_is_stored_once(archive: Archive) -> None:
    data = part10(make_dataset(pixel_bytes=2048))
    first = ingest(archive, data)
    files = stored_keys(archive)
    second = ingest(archive, data, origin=Origin("OTHER_AE", "10.0.0.9"))
    assert (first.status, second.status) == (StoreStatus.STORED, StoreStatus.ALREADY_STORED)
    assert second.size == 0
    assert stored_keys(archive) == files and len(files) == 1
    assert len(table_rows(archive, "instance")) == 1
    assert table_rows(archive, "duplicate_conflict") == []
    [study] = table_rows(archive, "study")
    assert study["num_instances"] == 1


def test_same_dataset_with_another_file_meta_is_the_same_object(archive: Archive) -> None:
    # Our File Meta replaces the sender's, so the same dataset sent as a bare
    # dataset, or by a sender with another Implementation Class UID, is a duplicate.
    ds = make_dataset()
    as_part10 = part10(ds)
    ingest(archive, as_part10)
    resent = bare(ds, implicit=False)
    assert resent != as_part10
    assert ingest(archive, resent).status is StoreStatus.ALREADY_STORED
    assert len(stored_keys(archive)) == 1


def test_conflicting_resend_keeps_both(archive: Archive) -> None:
    first = part10(make_dataset(patient_name="Nguyễn^Văn An"))
    second = part10(make_dataset(patient_name="Nguyễn^Văn Anh"))
    assert ingest(archive, first).status is StoreStatus.STORED
    [row_before] = table_rows(archive, "instance")

    result = ingest(archive, second, origin=Origin("CT2", "10.0.0.2"))
    assert result.status is StoreStatus.CONFLICT
    assert "first copy was kept" in result.comment
    assert result.size == len(file_meta_bytes(CTImageStorage, uid(3, 1), ExplicitVRLittleEndian)) + len(
        dataset_bytes(second))

    # The first copy stays the indexed one, untouched.
    assert table_rows(archive, "instance") == [row_before]
    assert dataset_bytes(read_object(archive, row_before["storage_key"])) == dataset_bytes(first)
    # The second is kept under its own key and recorded.
    [conflict] = table_rows(archive, "duplicate_conflict")
    assert conflict["sop_instance_uid"] == uid(3, 1)
    assert conflict["storage_key"] != row_before["storage_key"]
    kept = read_object(archive, conflict["storage_key"])
    assert dataset_bytes(kept) == dataset_bytes(second)
    assert conflict["sha256"] == hashlib.sha256(kept).hexdigest()
    assert conflict["size_bytes"] == len(kept)
    assert (conflict["calling_ae"], conflict["peer_address"]) == ("CT2", "10.0.0.2")
    assert len(stored_keys(archive)) == 2
    # Counts and names are the first copy's.
    [study] = table_rows(archive, "study")
    assert study["num_instances"] == 1
    [patient] = table_rows(archive, "patient")
    assert patient["patient_name"] == "Nguyễn^Văn An"
    audit = [(a["action"], a["outcome"], a["actor"]) for a in table_rows(archive, "audit_event")]
    assert audit == [("STORE", "stored", "MODALITY1"), ("STORE", "conflict kept", "CT2")]


def test_repeated_differing_resend_is_set_aside_once(archive: Archive) -> None:
    first = part10(make_dataset(patient_name="Nguyễn^Văn An"))
    second = part10(make_dataset(patient_name="Nguyễn^Văn Anh"))
    third = part10(make_dataset(patient_name="Nguyễn^Văn Ánh"))
    ingest(archive, first)
    assert ingest(archive, second).status is StoreStatus.CONFLICT
    again = ingest(archive, second)
    assert again.status is StoreStatus.CONFLICT
    assert again.size == 0  # nothing written the second time
    assert len(table_rows(archive, "duplicate_conflict")) == 1
    assert len(stored_keys(archive)) == 2
    # A copy that differs again is a new conflict, kept too.
    assert ingest(archive, third).status is StoreStatus.CONFLICT
    assert len(table_rows(archive, "duplicate_conflict")) == 2
    assert len(stored_keys(archive)) == 3


# --- refused instances ----------------------------------------------------------------

BAD_UIDS = ["1.2/3", "../../etc", "1.2..3", "1.2. 3", "1.2.3a", "1." + "2" * 63, "1.2.3\\1.2.4"]


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                                     "SOPClassUID"])  # fmt: skip
@pytest.mark.parametrize("bad", BAD_UIDS + [None])
def test_invalid_uids_are_refused_and_leave_nothing(archive: Archive, keyword: str, bad: str | None) -> None:
    ds = make_dataset()
    if bad is None:
        del ds[keyword]
    else:
        setattr(ds, keyword, bad)
    data = bare(ds, implicit=False)  # no File Meta, which would repeat the bad UID
    with pytest.raises(InvalidInstance) as excinfo:
        ingest(archive, data)
    assert keyword in str(excinfo.value)
    assert excinfo.value.dimse_status == 0xC000 and excinfo.value.http_status == 400
    assert stored_keys(archive) == []
    assert_nothing_indexed(archive)


def test_damaged_object_is_refused_and_leaves_nothing(archive: Archive) -> None:
    data = part10(make_dataset(pixel_bytes=4096))
    with pytest.raises(InvalidInstance, match="truncated"):
        ingest(archive, data[:-100])
    assert stored_keys(archive) == []
    assert_nothing_indexed(archive)


def test_expected_sop_class_and_instance(archive: Archive) -> None:
    data = part10(make_dataset())
    with pytest.raises(SOPClassMismatch) as excinfo:
        ingest(archive, data, expected=Expected(sop_class_uid=MRImageStorage))
    assert excinfo.value.dimse_status == 0xA900
    with pytest.raises(SOPClassMismatch):
        ingest(archive, data, expected=Expected(sop_instance_uid=uid(3, 999)))
    with pytest.raises(InvalidInstance, match="belongs to study"):
        ingest(archive, data, expected=Expected(study_instance_uid=uid(1, 999)))
    assert stored_keys(archive) == []
    assert_nothing_indexed(archive)
    ok = Expected(sop_class_uid=CTImageStorage, sop_instance_uid=uid(3, 1), study_instance_uid=uid(1, 1))
    assert ingest(archive, data, expected=ok).status is StoreStatus.STORED


def test_storage_full_stores_nothing(tmp_path: Path) -> None:
    full = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"),
                        reserve_bytes=10**18)  # fmt: skip
    try:
        with pytest.raises(StorageFull) as excinfo:
            ingest(full, part10(make_dataset()))
        assert excinfo.value.dimse_status == 0xA700 and excinfo.value.http_status == 507
        assert stored_files(tmp_path / "objects") == []
        assert_nothing_indexed(full)
    finally:
        full.close()


def test_index_failure_after_the_write_removes_the_object(archive: Archive) -> None:
    ingest_ds(archive, make_dataset(1))
    before = stored_keys(archive)
    # The audit row is the last insert of an instance: everything before it
    # succeeds, then the transaction fails and must take the object with it.
    with archive.db.write() as conn:
        conn.execute(text("DROP TABLE audit_event"))
    with pytest.raises(StorageUnavailable) as excinfo:
        ingest_ds(archive, make_dataset(2, study=uid(1, 2), series=uid(2, 2), patient_id="PID002"))
    assert excinfo.value.dimse_status == 0xA700
    assert stored_keys(archive) == before
    assert len(table_rows(archive, "instance")) == 1
    assert len(table_rows(archive, "study")) == 1
    assert len(table_rows(archive, "patient")) == 1


def test_index_constraint_failure_removes_the_object(archive: Archive) -> None:
    with archive.db.write() as conn:
        if archive.db.is_sqlite:
            conn.execute(text("CREATE TRIGGER no_more BEFORE INSERT ON instance "
                              "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"))  # fmt: skip
        else:
            conn.execute(text("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                              "RAISE EXCEPTION 'refused by test trigger' USING ERRCODE = 'check_violation'; "
                              "END $$"))  # fmt: skip
            conn.execute(text("CREATE TRIGGER no_more BEFORE INSERT ON instance "
                              "FOR EACH ROW EXECUTE FUNCTION refuse()"))  # fmt: skip
    with pytest.raises(StorageUnavailable, match="constraint"):
        ingest_ds(archive, make_dataset())
    assert stored_keys(archive) == []
    assert_nothing_indexed(archive)


@pytest.fixture
def capped_archive(tmp_path: Path) -> Iterator[Archive]:
    """An archive whose SQLite index cannot grow beyond its current pages (real SQLITE_FULL)."""
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    engine = make_engine(url)
    migrate(engine)
    with engine.connect() as conn:
        pages: int = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    engine.dispose()

    def cap(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute(f"PRAGMA max_page_count={pages}")
        cursor.close()

    event.listen(engine, "connect", cap)
    arc = Archive(Database(engine), FilesystemStore(tmp_path / "objects"))
    yield arc
    arc.close()


def test_index_disk_full_is_storage_full_and_removes_the_object(capped_archive: Archive) -> None:
    with pytest.raises(StorageFull, match="index"):
        ingest_ds(capped_archive, make_dataset(pixel_bytes=256, StudyDescription="x" * 20000))
    assert stored_keys(capped_archive) == []
    assert_nothing_indexed(capped_archive)


# --- text -----------------------------------------------------------------------------------


def test_vietnamese_text_is_indexed_nfc(archive: Archive) -> None:
    name = unicodedata.normalize("NFD", "Nguyễn^Văn Đào")
    description = unicodedata.normalize("NFD", "CT sọ não không tiêm thuốc")
    data = part10(make_dataset(patient_name=name, StudyDescription=description))
    assert name.encode("utf-8") in data  # sent decomposed
    ingest(archive, data)
    [patient] = table_rows(archive, "patient")
    [study] = table_rows(archive, "study")
    assert patient["patient_name"] == "Nguyễn^Văn Đào"
    assert unicodedata.is_normalized("NFC", patient["patient_name"])
    assert patient["patient_name_key"] == "DAO NGUYEN VAN"
    assert patient["attrs"]["00100010"]["Value"] == [{"Alphabetic": "Nguyễn^Văn Đào"}]
    assert study["study_description"] == "CT sọ não không tiêm thuốc"
    assert study["attrs"]["00081030"]["Value"] == ["CT sọ não không tiêm thuốc"]
    tokens = sorted(t["token"] for t in table_rows(archive, "name_token") if t["kind"] == 1)
    assert tokens == ["DAO", "NGUYEN", "VAN"]
    # The object keeps the bytes as received.
    [row] = table_rows(archive, "instance")
    assert name.encode("utf-8") in read_object(archive, row["storage_key"])


@pytest.mark.parametrize(
    ("charset", "name", "description"),
    [
        ("ISO_IR 100", "Müller^José", "Thorax café"),
        ("ISO_IR 101", "Dvořák^Antonín", "Hrudník"),
        ("ISO_IR 144", "Иванов^Иван", "Грудная клетка"),
        ("ISO_IR 192", "Lê^Thị Hồng Nhung", "Siêu âm ổ bụng tổng quát"),
        (None, "SMITH^JOHN", "CHEST"),
    ],
)
def test_character_sets_are_decoded(archive: Archive, charset: str | None, name: str, description: str) -> None:
    ds = make_dataset(charset=charset, patient_name=name, StudyDescription=description)
    data = part10(ds)
    if charset not in (None, "ISO_IR 192"):
        assert name.encode("utf-8") not in data  # really encoded in the single-byte set
    ingest(archive, data)
    [patient] = table_rows(archive, "patient")
    [study] = table_rows(archive, "study")
    assert patient["patient_name"] == name
    assert study["study_description"] == description
    assert patient["attrs"]["00100010"]["Value"] == [{"Alphabetic": name}]


def test_latin1_name_is_found_without_accents(archive: Archive) -> None:
    from tests.archive.helpers import find

    ingest_ds(archive, make_dataset(charset="ISO_IR 100", patient_name="Müller^José"))
    [match] = find(archive, "STUDY", PatientName="MULLER^JOSE")
    assert str(match.PatientName) == "Müller^José"
    assert match.SpecificCharacterSet == "ISO_IR 192"


# --- patients ---------------------------------------------------------------------------------


def test_other_patient_ids_are_indexed(archive: Archive) -> None:
    ds = make_dataset(OtherPatientIDsSequence=other_ids(("080068001234", "CCCD", "TEXT"),
                                                        ("GD4800123456789", "BHYT", "TEXT")))  # fmt: skip
    ingest_ds(archive, ds)
    [patient] = table_rows(archive, "patient")
    ids = [(r["value"], r["issuer"], r["type_of_id"], r["patient_pk"]) for r in table_rows(archive, "patient_identifier")]
    assert ids == [("080068001234", "CCCD", "TEXT", patient["pk"]),
                   ("GD4800123456789", "BHYT", "TEXT", patient["pk"])]  # fmt: skip
    # A later instance adds what is new and does not repeat what is known.
    later = make_dataset(2, OtherPatientIDsSequence=other_ids(("080068001234", "CCCD", "TEXT")),
                         OtherPatientIDs="HIS-778\\080068001234")  # fmt: skip
    ingest_ds(archive, later)
    values = [r["value"] for r in table_rows(archive, "patient_identifier")]
    assert values == ["080068001234", "GD4800123456789", "HIS-778"]


def test_retired_other_patient_ids_are_indexed(archive: Archive) -> None:
    ingest_ds(archive, make_dataset(OtherPatientIDs="A-1\\B-2"))
    ids = [(r["value"], r["issuer"]) for r in table_rows(archive, "patient_identifier")]
    assert ids == [("A-1", ""), ("B-2", "")]


def test_empty_patient_id_gives_a_patient_per_study(archive: Archive) -> None:
    for n, study in enumerate([uid(1, 10), uid(1, 10), uid(1, 11)], start=1):
        ingest_ds(archive, make_dataset(n, study=study, series=uid(2, 10 + n), patient_id=""))
    ingest_ds(archive, make_dataset(4, study=uid(1, 12), series=uid(2, 20), patient_id=None))
    patients = table_rows(archive, "patient")
    studies = table_rows(archive, "study")
    assert len(patients) == 3 and len(studies) == 3
    # Same name, no ID: never merged.
    assert {p["patient_name"] for p in patients} == {"Nguyễn^Văn An"}
    assert sorted(s["patient_pk"] for s in studies) == sorted(p["pk"] for p in patients)
    by_study = {s["study_instance_uid"]: s for s in studies}
    assert by_study[uid(1, 10)]["num_instances"] == 2


def test_same_name_different_id_are_two_patients(archive: Archive) -> None:
    ingest_ds(archive, make_dataset(1, study=uid(1, 1), patient_id="BN1"))
    ingest_ds(archive, make_dataset(2, study=uid(1, 2), series=uid(2, 2), patient_id="BN2"))
    assert len(table_rows(archive, "patient")) == 2


def test_issuer_distinguishes_patient_ids(archive: Archive) -> None:
    ingest_ds(archive, make_dataset(1, study=uid(1, 1), IssuerOfPatientID="BVA"))
    ingest_ds(archive, make_dataset(2, study=uid(1, 2), series=uid(2, 2), IssuerOfPatientID="BVB"))
    patients = table_rows(archive, "patient")
    assert [(p["patient_id"], p["issuer_of_patient_id"]) for p in patients] == [
        ("PID001", "BVA"), ("PID001", "BVB")]  # fmt: skip


def test_study_under_another_patient_warns_and_does_not_merge(archive: Archive) -> None:
    ingest_ds(archive, make_dataset(1, patient_id="BN-A", patient_name="Trần^Thị Đào",
                                    OtherPatientIDsSequence=other_ids(("111", "CCCD", "TEXT"))))  # fmt: skip
    result = ingest_ds(archive, make_dataset(2, patient_id="BN-B", patient_name="Lê^Văn Bình",
                                             OtherPatientIDsSequence=other_ids(("222", "CCCD", "TEXT"))))  # fmt: skip
    assert result.status is StoreStatus.STORED
    assert len(result.warnings) == 1 and "another patient" in result.warnings[0]
    assert "another patient" in result.comment
    [study] = table_rows(archive, "study")
    assert study["num_instances"] == 2
    patients = table_rows(archive, "patient")
    # The study stays with its first patient, whose data is untouched ...
    assert patients[0]["pk"] == study["patient_pk"]
    assert patients[0]["patient_name"] == "Trần^Thị Đào"
    assert [r["value"] for r in table_rows(archive, "patient_identifier")] == ["111"]
    # ... and no empty second patient appears (it would be listed with no studies).
    assert [p["patient_id"] for p in patients] == ["BN-A"]
    audit = [a["outcome"] for a in table_rows(archive, "audit_event")]
    assert audit == ["stored", "stored with warnings"]


def test_series_under_another_study_warns(archive: Archive) -> None:
    ingest_ds(archive, make_dataset(1, study=uid(1, 1), series=uid(2, 1)))
    result = ingest_ds(archive, make_dataset(2, study=uid(1, 2), series=uid(2, 1)))
    assert any("another study" in w for w in result.warnings)
    series = table_rows(archive, "series")
    assert len(series) == 1 and series[0]["num_instances"] == 2


# --- counts and audit -----------------------------------------------------------------------


def test_counts_across_several_series(archive: Archive) -> None:
    plan = [  # (series, modality, instances)
        (uid(2, 1), "CT", 3),
        (uid(2, 2), "CT", 2),
        (uid(2, 3), "SR", 1),
        (uid(2, 4), "", 1),  # no Modality: counted, not listed
    ]
    n = 0
    for series, modality, count in plan:
        for _ in range(count):
            n += 1
            ingest_ds(archive, make_dataset(n, series=series, modality=modality, pixel_bytes=100 * n))
    [study] = table_rows(archive, "study")
    instances = table_rows(archive, "instance")
    assert study["num_series"] == 4
    assert study["num_instances"] == 7 == len(instances)
    assert study["size_bytes"] == sum(i["size_bytes"] for i in instances)
    assert study["modalities_in_study"] == "CT\\SR"
    assert [s["num_instances"] for s in table_rows(archive, "series")] == [3, 2, 1, 1]
    stats = archive.statistics()
    assert (stats.patients, stats.studies, stats.series, stats.instances) == (1, 1, 4, 7)
    assert stats.size_bytes == study["size_bytes"]


def test_modalities_in_study_sorted_and_unique(archive: Archive) -> None:
    for n, (series, modality) in enumerate([(uid(2, 1), "US"), (uid(2, 2), "CT"), (uid(2, 3), "US"),
                                            (uid(2, 4), "dx")], start=1):  # fmt: skip
        ingest_ds(archive, make_dataset(n, series=series, modality=modality))
    [study] = table_rows(archive, "study")
    assert study["modalities_in_study"] == "CT\\DX\\US"


def test_audit_rows_for_stores(archive: Archive) -> None:
    ingest_ds(archive, make_dataset(1))
    ingest_ds(archive, make_dataset(2))
    ingest_ds(archive, make_dataset(2))  # already stored: nothing changed, nothing to audit
    rows = table_rows(archive, "audit_event")
    assert [(r["action"], r["level"], r["uid"], r["outcome"], r["actor"], r["address"]) for r in rows] == [
        ("STORE", "IMAGE", uid(3, 1), "stored", "MODALITY1", "127.0.0.1"),
        ("STORE", "IMAGE", uid(3, 2), "stored", "MODALITY1", "127.0.0.1"),
    ]
    assert rows[0]["detail"] == f"study {uid(1, 1)}; new study"
    assert rows[1]["detail"] == f"study {uid(1, 1)}"
    assert all(r["at"] is not None for r in rows)


def test_audit_log_record(archive: Archive) -> None:
    archive.audit.record(ORIGIN, "QUERY", "STUDY", "", "3 matches", "PatientName")
    archive.audit.flush()
    [row] = table_rows(archive, "audit_event")
    assert (row["action"], row["level"], row["outcome"], row["detail"]) == (
        "QUERY", "STUDY", "3 matches", "PatientName")  # fmt: skip


def test_audit_events_are_written_in_batches_and_all_kept_on_close(tmp_path: Path) -> None:
    arc = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"))
    for n in range(1200):  # more than one batch
        arc.audit.record(ORIGIN, "QUERY", "STUDY", "", f"{n} matches")
    arc.close()  # flushes
    arc = Archive.open(f"sqlite:///{tmp_path / 'index.sqlite'}", str(tmp_path / "objects"))
    outcomes = [r["outcome"] for r in table_rows(arc, "audit_event")]
    arc.close()
    assert outcomes == [f"{n} matches" for n in range(1200)]


# --- the sample studies ---------------------------------------------------------------------


def test_sample_studies(archive: Archive) -> None:
    for path in CT_FILES + [DX_FILE] + US_FILES:
        with open(path, "rb") as stream:
            assert archive.ingest(stream, ORIGIN).status is StoreStatus.STORED
    patients = {p["patient_id"]: p for p in table_rows(archive, "patient")}
    assert {k: p["patient_name"] for k, p in patients.items()} == {
        "BN26001001": "Nguyễn^Văn An",
        "BN26001002": "Trần^Thị Đào",
        "BN26001003": "Lê^Thị Hồng Nhung",
    }
    studies = {s["accession_number"]: s for s in table_rows(archive, "study")}
    assert studies["CT2611200001"]["num_instances"] == 20
    assert studies["CT2611200001"]["modalities_in_study"] == "CT"
    assert studies["US2611210003"]["num_instances"] == 2
    ids = {(r["value"], r["issuer"]) for r in table_rows(archive, "patient_identifier")}
    assert {("080068001234", "CCCD"), ("GD4800123456789", "BHYT"), ("080175004321", "CCCD"),
            ("DN4800246813579", "BHYT")} <= ids  # fmt: skip
    assert len(ids) == 6
    dx = [i for i in table_rows(archive, "instance") if i["sop_class_uid"] == DigitalXRayImageStorageForPresentation]
    assert len(dx) == 1 and dx[0]["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.90"
    assert dx[0]["rows"] == 1536 and dx[0]["bits_allocated"] == 16


# --- two associations racing with the same SOP Instance ----------------------------------------


class MeetingStore(FilesystemStore):
    """A real filesystem store whose puts wait for each other once written.

    Both ingests have then looked the instance up (not there yet) and written
    their object, so both reach the index with the same SOP Instance UID: the
    race the index transaction has to settle.
    """

    def __init__(self, root: Path, parties: int) -> None:
        super().__init__(root)
        self.barrier = threading.Barrier(parties, timeout=20)

    def put(self, key: str, stream: Readable) -> PutResult:
        result = super().put(key, stream)
        self.barrier.wait()
        return result


def _race(tmp_path: Path, first: bytes, second: bytes) -> tuple[Archive, list[StoreStatus]]:
    arc = Archive(Database.open(f"sqlite:///{tmp_path / 'index.sqlite'}"),
                  MeetingStore(tmp_path / "objects", parties=2))  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(ingest, arc, data) for data in (first, second)]
        statuses = sorted((f.result(timeout=30).status for f in futures), key=lambda s: s.name)
    return arc, statuses


def test_racing_identical_resends_store_one_object(tmp_path: Path) -> None:
    data = part10(make_dataset(pixel_bytes=1024))
    arc, statuses = _race(tmp_path, data, data)
    try:
        assert statuses == [StoreStatus.ALREADY_STORED, StoreStatus.STORED]
        assert len(stored_files(tmp_path / "objects")) == 1
        [row] = table_rows(arc, "instance")
        assert arc.objects.exists(row["storage_key"])
        assert table_rows(arc, "duplicate_conflict") == []
        assert table_rows(arc, "study")[0]["num_instances"] == 1
    finally:
        arc.close()


def test_racing_conflicting_resends_keep_both(tmp_path: Path) -> None:
    a = part10(make_dataset(patient_name="Nguyễn^Văn An"))
    b = part10(make_dataset(patient_name="Nguyễn^Văn Anh"))
    arc, statuses = _race(tmp_path, a, b)
    try:
        assert statuses == [StoreStatus.CONFLICT, StoreStatus.STORED]
        assert len(stored_files(tmp_path / "objects")) == 2
        [row] = table_rows(arc, "instance")
        [conflict] = table_rows(arc, "duplicate_conflict")
        assert {row["sha256"], conflict["sha256"]} == {
            hashlib.sha256(read_object(arc, row["storage_key"])).hexdigest(),
            hashlib.sha256(read_object(arc, conflict["storage_key"])).hexdigest(),
        }
        assert row["sha256"] != conflict["sha256"]
    finally:
        arc.close()
