"""`minipacs serve` and `minipacs demo` as real processes: start, answer C-ECHO, stop."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests.appliance.util import (
    assert_one_line_error,
    cli_env,
    instance_count,
    run_cli,
    start_cli,
    wait_for_echo,
)
from archive import Archive
from tests.conftest import echo, free_port, start_server

LOCAL = cli_env(MINIPACS_DICOM_HOST="127.0.0.1")


def test_port_already_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--data", "data", "--dicom-port", str(port), cwd=tmp_path, env=LOCAL)
    line = assert_one_line_error(result, 1)
    assert f"cannot listen for DICOM on 127.0.0.1:{port}" in line
    assert "already using the port" in line
    assert "--dicom-port" in line


def test_http_port_already_taken_names_the_http_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**LOCAL, "MINIPACS_HTTP_HOST": "127.0.0.1"}
        result = run_cli("serve", "--data", "data", "--dicom-port", str(free_port()), "--http-port", str(port),
                         cwd=tmp_path, env=env)  # fmt: skip
    line = assert_one_line_error(result, 1)
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in line
    assert "--http-port" in line and "DICOM" not in line


def test_start_up_warns_when_nobody_may_connect(tmp_path: Path) -> None:
    """calling_ae = "registered" with an empty registry refuses every modality: say so at
    start-up. (The port is taken so the command stops right after its start-up checks.)"""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = cli_env(MINIPACS_DICOM_HOST="127.0.0.1", MINIPACS_DICOM_CALLING_AE="registered")
        result = run_cli("serve", "--data", "data", "--dicom-port", str(taken.getsockname()[1]),
                         cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 1
    assert 'dicom.calling_ae = "registered" but no AE is registered' in result.stderr
    assert "minipacs ae add" in result.stderr


def test_address_not_on_this_machine(tmp_path: Path) -> None:
    env = cli_env(MINIPACS_DICOM_HOST="192.0.2.1")  # TEST-NET-1: never a local address
    result = run_cli("serve", "--data", "data", "--dicom-port", str(free_port()), cwd=tmp_path, env=env)
    line = assert_one_line_error(result, 1)
    assert "192.0.2.1 is not an address of this machine" in line
    assert "dicom.host" in line and "MINIPACS_DICOM_HOST" in line
    assert "already using the port" not in line  # that advice would send the operator the wrong way


def test_serve_uses_the_config_file_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "minipacs.toml").write_text('[storage]\nreserve_mb = 1000000000\n\n'  # 1 PiB
                                            '[dicom]\nae_title = "BV_HUYEN_01"\ncheck_called_ae = true\n')
    env = {name: value for name, value in LOCAL.items() if name != "MINIPACS_STORAGE_RESERVE_MB"}
    port = free_port()
    running = start_cli("serve", "--data", "data", "--dicom-port", str(port), cwd=tmp_path, env=env)
    try:
        wait_for_echo(running, port, aet="BV_HUYEN_01")
        assert not echo(port, aet="MINIPACS"), "check_called_ae from the file refuses another called AE"
    finally:
        code = running.stop(signal.SIGTERM)
    log = running.stderr
    assert code == 0, log
    assert "received SIGTERM, shutting down" in log
    assert "DICOM listener stopped" in log
    assert log.rstrip().endswith("minipacs stopped"), log
    assert "Traceback" not in log
    # The start-up log says at once that the disk is below the reserve, and what to do.
    assert "less than storage.reserve_mb = 1000000000: new images will be refused" in log
    with socket.socket() as again:  # nothing listens any more (REUSEADDR: the echoes' TIME_WAIT)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


def test_serve_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    code = server.stop(signal.SIGINT)
    log = server.log()
    assert code == 0, log
    assert "received SIGINT, shutting down" in log
    assert "minipacs stopped" in log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log


def test_demo_imports_the_samples_once(tmp_path: Path) -> None:
    outputs = []
    for run in ("first", "second"):
        port = free_port()
        running = start_cli("demo", "--dicom-port", str(port), cwd=tmp_path, env=LOCAL, name=run)
        try:
            wait_for_echo(running, port)
            assert instance_count(tmp_path / "minipacs-data") == 23
            listed = run_cli("worklist", "list", "--date", "today", cwd=tmp_path, env=LOCAL)
            assert listed.returncode == 0, listed.stderr
            assert [line.split()[3] for line in listed.stdout.splitlines()[1:]] == ["CT", "DX", "US"]
        finally:
            code = running.stop(signal.SIGTERM)
        assert code == 0, running.stderr
        assert "Traceback" not in running.stderr
        assert "received SIGTERM, shutting down" in running.stderr
        outputs.append((port, running.stdout))

    (first_port, first), (_, second) = outputs
    assert first.splitlines()[0] == ("Sample studies: 23 stored, 0 already stored, 0 conflicting "
                                     "resends kept aside, 0 rejected, 0 non-DICOM files skipped")  # fmt: skip
    assert second.splitlines()[0].startswith("Sample studies: 0 stored, 23 already stored, ")
    assert first.splitlines()[1] == "Sample orders for today: 3 new, 3 in all (minipacs worklist list --date today)"
    assert second.splitlines()[1].startswith("Sample orders for today: 0 new, 3 in all")
    assert "minipacs is running." in first
    # Demo users to try the web screens with, made once with one password that is shown again.
    password = (tmp_path / "minipacs-data" / "demo-password.txt").read_text().strip()
    assert password.startswith("demo-") and f"password {password}" in first and f"password {password}" in second
    assert "bs.demo (radiologist)" in first and "minipacs user disable" in first
    archive = Archive.open(f"sqlite:///{tmp_path / 'minipacs-data' / 'index.sqlite'}",
                           str(tmp_path / "minipacs-data" / "objects"))  # fmt: skip
    try:
        assert archive.accounts.authenticate("bs.demo", password) is not None
        assert [u.username for u in archive.accounts.users()] == ["admin", "bs.demo", "ktv.demo"]
    finally:
        archive.close()
    assert f"DICOM: AE title MINIPACS, port {first_port}" in first
    # Bound to 127.0.0.1 only, so the dcmtk example must use that address, not localhost.
    assert f"echoscu  -aec MINIPACS 127.0.0.1 {first_port}" in first
    assert "Stop with Ctrl+C." in first


def test_json_logs_from_every_process(tmp_path: Path) -> None:
    import json

    from tests.conftest import CT_FILES, dcmtk

    server = start_server(tmp_path / "data", env={"MINIPACS_LOG_FORMAT": "json"})
    try:
        dcmtk("storescu", "-aec", server.aet, "127.0.0.1", server.port, CT_FILES[0])
    finally:
        assert server.stop() == 0
    lines = [line for line in server.log().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    stored = [e for e in entries if e["logger"] == "dicom_scp.handlers" and "stored" in e["message"]]
    assert stored and stored[0]["process"].startswith("dicom-") and stored[0]["level"] == "INFO"
    assert any(e["logger"] == "minipacs" and e["message"] == "minipacs stopped" for e in entries)
    text = [line for line in server.log().splitlines() if line and not line.startswith(("{", "["))]
    assert not text, text  # every line of ours is JSON (gunicorn's own lines start with "[")


def test_a_bad_log_format_is_refused(tmp_path: Path) -> None:
    result = run_cli("serve", "--data", "data", cwd=tmp_path, env=cli_env(MINIPACS_LOG_FORMAT="xml"))
    assert result.returncode == 2 and "log.format" in result.stderr and "text, json" in result.stderr
