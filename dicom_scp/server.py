"""The DICOM service: one pynetdicom AE wired to the archive."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from archive import Archive
from dicom_scp import handlers, responses, worklist_handlers
from dicom_scp.associations import AssociationLog
from dicom_scp.sockets import tune_socket
from dicom_scp.contexts import (
    PLAIN_TRANSFER_SYNTAXES,
    QUERY_RETRIEVE,
    STORAGE_SOP_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION,
    WORKLIST,
    acceptor_contexts,
)
from worklist.mpps import PerformedSteps
from worklist.service import Worklist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DicomConfig:
    """Everything the DICOM listener needs from the appliance settings."""

    ae_title: str = "MINIPACS"
    host: str = "0.0.0.0"
    port: int = 11112
    #: Largest PDU we accept; 0 means no limit (PS3.8 D.3.3.2.1).
    max_pdu: int = 1048576
    max_associations: int = 32
    acse_timeout: float = 30
    dimse_timeout: float = 60
    network_timeout: float = 300
    #: False: accept any calling AE. True: only registered AEs (from their host, if one is set).
    registered_only: bool = False
    #: Refuse associations addressed to another AE title.
    check_called_ae: bool = False
    #: Where incoming datasets are spooled while they arrive; same disk as the archive.
    spool_dir: Path = Path("spool")
    #: Prefix of association ids in the log ("w2." in worker process 2).
    session_prefix: str = ""
    #: Calling AE titles whose worklist is in ASCII, without Specific Character Set.
    ascii_stations: frozenset[str] = frozenset()


class DicomService:
    """Starts and stops the DIMSE listener (Verification, Storage, Q/R FIND/MOVE/GET)."""

    name = "DICOM"

    def __init__(
        self, archive: Archive, config: DicomConfig, listen_socket: socket.socket | None = None,
        worklist: Worklist | None = None,
    ) -> None:
        """`listen_socket`: an already listening socket shared with other worker
        processes (appliance.workers); without one the service binds its own.
        `worklist`: serve the Modality Worklist and MPPS from it."""
        self.archive = archive
        self.worklist = worklist
        self.config = config
        self.listen_socket = listen_socket
        self.associations = AssociationLog(
            archive.registry, config.registered_only, config.session_prefix
        )
        self._server: ThreadedAssociationServer | None = None
        self._ae: AE | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when configured as 0."""
        if self._server is None:
            return self.config.host, self.config.port
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def describe(self) -> str:
        host, port = self.address
        return f"DICOM AE {self.config.ae_title} on {host}:{port}"

    def start(self) -> None:
        _configure_pynetdicom(self.config.spool_dir)
        ae = self._ae = self._build_ae()
        handlers_: list[Any] = [
            (evt.EVT_C_ECHO, handlers.handle_echo),
            (evt.EVT_C_STORE, handlers.handle_store, [self.archive, self.associations]),
            (evt.EVT_C_FIND, self._handle_find),
            (evt.EVT_C_MOVE, handlers.handle_move, [self.archive, self.associations]),
            (evt.EVT_C_GET, handlers.handle_get, [self.archive, self.associations]),
            (evt.EVT_REQUESTED, self.associations.on_requested),
            (evt.EVT_ACCEPTED, self.associations.on_accepted),
            (evt.EVT_RELEASED, self.associations.on_ended),
            (evt.EVT_ABORTED, self.associations.on_ended),
            (evt.EVT_CONN_OPEN, tune_socket),
            (evt.EVT_CONN_CLOSE, _discard_partial_dataset),
        ]  # fmt: skip
        if self.worklist is not None:
            performed = PerformedSteps(self.worklist)
            handlers_ += [(evt.EVT_N_CREATE, worklist_handlers.handle_n_create, [performed, self.associations]),
                          (evt.EVT_N_SET, worklist_handlers.handle_n_set, [performed, self.associations])]
        address = (self.config.host, self.config.port)
        contexts = acceptor_contexts(ae.supported_contexts)
        if self.listen_socket is None:
            self._server = ae.start_server(address, block=False, evt_handlers=handlers_, contexts=contexts)
        else:
            self._server = ae.make_server(address, contexts=contexts, evt_handlers=handlers_,
                                          server_class=_shared_server(self.listen_socket))  # fmt: skip
            ae._servers.append(self._server)  # as start_server does; shutdown() removes it
            threading.Thread(target=self._server.serve_forever, name="dicom-acceptor",
                             daemon=True).start()  # fmt: skip
        log.info("listening: %s", self.describe())

    def _handle_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """EVT_C_FIND: the Modality Worklist model to the worklist, Q/R models to the archive."""
        if self.worklist is not None and \
                str(event.request.AffectedSOPClassUID) == worklist_handlers.MODALITY_WORKLIST_FIND:
            return worklist_handlers.handle_mwl_find(event, self.worklist, self.associations,
                                                     self.config.ascii_stations)  # fmt: skip
        return handlers.handle_find(event, self.archive, self.associations, self.config.ae_title)

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, give open associations `grace` seconds to finish, then abort them.

        An instance whose C-STORE is being handled is either answered within
        the grace period or never acknowledged, so the modality sends it again.
        """
        if self._server is None:
            return
        self._server.shutdown()
        self._server = None
        deadline = time.monotonic() + grace
        while self._ae is not None and time.monotonic() < deadline and any(
            assoc.is_established for assoc in self._ae.active_associations
        ):  # connections still negotiating (or only probing the port) are not waited for
            time.sleep(0.05)
        if self._ae is not None:
            for assoc in self._ae.active_associations:
                origin = self.associations.origin(assoc)
                log.log(logging.WARNING if assoc.is_established else logging.DEBUG,
                        "aborting association %s from %s at shutdown", origin.session, origin)  # fmt: skip
                assoc.abort()
        log.info("DICOM listener stopped")

    def _build_ae(self) -> AE:
        cfg = self.config
        ae = AE(ae_title=cfg.ae_title)
        ae.maximum_pdu_size = cfg.max_pdu
        ae.maximum_associations = cfg.max_associations
        ae.acse_timeout = cfg.acse_timeout
        ae.dimse_timeout = cfg.dimse_timeout
        ae.network_timeout = cfg.network_timeout
        ae.require_called_aet = cfg.check_called_ae
        ae.add_supported_context(VERIFICATION, PLAIN_TRANSFER_SYNTAXES)
        for sop_class in QUERY_RETRIEVE:
            ae.add_supported_context(sop_class, PLAIN_TRANSFER_SYNTAXES)
        if self.worklist is not None:
            for sop_class in WORKLIST:
                ae.add_supported_context(sop_class, PLAIN_TRANSFER_SYNTAXES)
        for sop_class in STORAGE_SOP_CLASSES:
            # SCP role accepted too, so a C-GET requestor can receive on its association.
            ae.add_supported_context(sop_class, STORAGE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        return ae


def _configure_pynetdicom(spool_dir: Path) -> None:
    """Process-wide pynetdicom settings the service depends on."""
    # Spool incoming datasets to disk chunk by chunk instead of in memory.
    _config.STORE_RECV_CHUNKED_DATASET = True
    # Never format query identifiers or responses for the log: they contain
    # patient names, and formatting every C-FIND match costs real time.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    # A malformed UID in a request's command set (over 64 characters, say) is
    # the archive's to refuse, with a status and a reason (archive.uids):
    # pynetdicom's own check would drop the association with a traceback and
    # no answer at all.
    _config.VALIDATORS["UI"] = _any_uid
    # C-FIND matches go out encoded from the index's JSON (dicom_scp.responses).
    responses.install()
    # pynetdicom spools into tempfile's directory; keep it on the archive's
    # disk (not a RAM-backed /tmp) and empty it of leftovers of a crash.
    shutil.rmtree(spool_dir, ignore_errors=True)
    spool_dir.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(spool_dir)


# Seconds a worker waits per association it serves before accepting another.
_BACKOFF_PER_ASSOCIATION = 0.003
_BACKOFF_LIMIT = 0.05


def _shared_server(listen_socket: socket.socket) -> type[ThreadedAssociationServer]:
    """A pynetdicom server class that accepts on a socket another process opened.

    Several worker processes accept on one listening socket (the pre-fork
    model of gunicorn and nginx): the kernel hands each connection to one of
    them, and Python's GIL no longer caps the service at one core. The socket
    is non-blocking so a worker that loses the race for a connection goes back
    to waiting instead of blocking in accept().

    Every worker is woken for each new connection and the first to accept it
    wins; a worker waits a moment per association it already serves before
    trying, so the least busy one wins and several modalities sending at once
    are spread over the workers instead of piling onto one.
    """
    listen_socket.setblocking(False)

    class SharedSocketServer(ThreadedAssociationServer):
        def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
            busy = len(self.active_associations)
            if busy:
                time.sleep(min(_BACKOFF_PER_ASSOCIATION * busy, _BACKOFF_LIMIT))
            return super().get_request()

        def server_bind(self) -> None:
            if self.socket is not None:
                self.socket.close()  # the one socketserver made; ours is already bound
            self.socket = listen_socket
            self.server_address = listen_socket.getsockname()

        def server_activate(self) -> None:
            pass  # already listening

        def server_close(self) -> None:
            # Close only this process's descriptor: shutdown() on the shared
            # socket would stop the other workers from accepting too.
            listen_socket.close()

    return SharedSocketServer


def _discard_partial_dataset(event: Event) -> None:
    """EVT_CONN_CLOSE: remove the spool file of a C-STORE dataset that never finished.

    pynetdicom deletes a spooled dataset after the C-STORE handler ran, but a
    dataset cut off by an abort or a dropped connection is never handed to a
    handler, and its file would stay in the spool until the next restart. A
    complete message is detached from `dimse.message` before it is handled,
    so what is left there at close is only ever a partial one.
    """
    message = getattr(event.assoc.dimse, "message", None)
    spool = getattr(message, "_data_set_file", None)
    if spool is None:
        return
    try:
        spool.close()
        os.unlink(spool.name)
    except OSError as exc:
        log.warning("could not remove the partial dataset %s: %s", spool.name, exc)
        return
    log.info("removed the partial dataset of an interrupted C-STORE from %s",
             event.assoc.requestor.address)  # fmt: skip


def _any_uid(value: object) -> tuple[bool, str]:
    """pynetdicom UID validator that lets every value through to the handlers."""
    return True, ""
