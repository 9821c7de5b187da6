"""A bare pynetdicom Storage SCP: the floor under any pynetdicom-based archive.

It receives each dataset (spooled to disk by pynetdicom as it arrives), copies
the spooled file into ``FOLDER/objects`` with fsync and answers Success.
No parsing, no index, no checks: what is left between this and minipacs is
the cost of the archive itself.

    .venv/bin/python bench/bare_scp.py --port 11113 --folder bench/out/bare
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import cast

from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--aet", default="BARE")
    args = parser.parse_args()

    objects = args.folder / "objects"
    spool = args.folder / "spool"
    objects.mkdir(parents=True, exist_ok=True)
    spool.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(spool)  # spool on the same disk, as minipacs does
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"

    def handle_store(event: Event) -> int:
        target = objects / f"{cast(C_STORE, event.request).AffectedSOPInstanceUID}.dcm"
        with open(event.dataset_path, "rb") as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        return 0x0000

    ae = AE(ae_title=args.aet)
    ae.maximum_pdu_size = 0
    ae.add_supported_context(UID("1.2.840.10008.1.1"))  # Verification
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax:
            ae.add_supported_context(context.abstract_syntax, AllTransferSyntaxes)
    ae.start_server(("127.0.0.1", args.port), block=True,
                    evt_handlers=[(evt.EVT_C_STORE, handle_store)])  # fmt: skip


if __name__ == "__main__":
    main()
