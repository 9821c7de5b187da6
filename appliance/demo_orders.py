"""Today's sample orders for `minipacs demo`, so a console (or findscu -W) has a worklist to show."""

from __future__ import annotations

from datetime import datetime

from archive import Archive, Origin
from archive.patients import OtherId, PatientDemographics
from worklist.service import Worklist
from worklist.types import OrderRequest

DEMO = Origin("demo", "", "DEMO")

_ORDERS = (
    ("0800", "CT-SONAO", "STAT", PatientDemographics(
        "DEMO001", name="Nguyễn^Văn An", birth_date="19680315", sex="M",
        other_ids=(OtherId("001068012345", "CCCD"), OtherId("DN4010123456789", "BHYT")))),
    ("0830", "XQ-NGUC-THANG", "ROUTINE", PatientDemographics(
        "DEMO002", name="Trần^Thị Hoa", birth_date="19900101", sex="F")),
    ("0900", "SA-OBUNG", "ROUTINE", PatientDemographics(
        "DEMO003", name="Lê^Văn Cường", birth_date="19751120", sex="M")),
)  # fmt: skip


def place_demo_orders(archive: Archive, worklist: Worklist) -> int:
    """Place today's three sample orders (again the same day changes nothing); returns how many are new."""
    today = datetime.now().strftime("%Y%m%d")
    new = 0
    for number, (time, code, priority, patient) in enumerate(_ORDERS, start=1):
        result = worklist.create(OrderRequest(
            placer_issuer="DEMO", placer_order_number=f"DEMO-{today}-{number}", patient=patient,
            procedure_code=code, priority=priority, start_date=today, start_time=time,
            referring_physician="Phạm^Minh Đức",
        ), DEMO)  # fmt: skip
        new += result.outcome.value == "created"
    return new
