"""HL7 v2 over a real MLLP socket (`cmfhir serve --mllp-port`): framed messages answered
with framed ACKs on the same connection; peers off the allow-list get nothing."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import RunningServer
from tests.exchange.hl7 import sample, search, segments, tag
from tests.serving import free_port

from cmfhir.config import Settings
from cmfhir.exchange.mllp import END, START, frame


def _exchange(sock: socket.socket, message: str) -> str:
    sock.sendall(frame(message))
    data = b""
    while not data.endswith(END):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert data.startswith(START), data
    return data[1:-2].decode()


@pytest.fixture
def mllp(
    settings: Settings, start_server: type[RunningServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[int, str]]:
    port = free_port()
    monkeypatch.setenv("CMFHIR_MLLP_PORT", str(port))
    monkeypatch.setenv("CMFHIR_MLLP_HOST", "127.0.0.1")
    with start_server(settings) as running:
        yield port, running.base


def test_messages_over_mllp_are_stored_and_acknowledged(mllp: tuple[int, str]) -> None:
    port, base = mllp
    unique = tag()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        first = segments(_exchange(sock, sample("ADT-A01-02.hl7", unique)))
        assert first["MSA"][1:3] == ["AA", f"MSG00001{unique}"]
        # The same connection carries the next message; the same message twice changes nothing.
        again = segments(_exchange(sock, sample("ADT-A01-02.hl7", unique)))
        assert again["MSA"][1] == "AA"
        refused = segments(
            _exchange(sock, sample("ADT04-251.hl7", unique, **{"ADT^A04": "ADT^A99"}))
        )
        assert refused["MSA"][1] == "AR"
        assert refused["ERR"][1].startswith("MSH^1^9^201&")  # v2.3 ERR-1
    with httpx.Client(base_url=base, timeout=30) as client:
        [patient] = search(client, f"Patient?identifier=PATID1234{unique}")
        assert patient["meta"]["versionId"] == "1"
        assert len(search(client, f"Encounter?identifier=40007716{unique}")) == 1
        assert search(client, f"Patient?identifier=MRN12345{unique}") == []


def test_mllp_framing_split_across_packets(mllp: tuple[int, str]) -> None:
    port, _ = mllp
    unique = tag()
    payload = frame(sample("ADT04-251.hl7", unique))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for index in range(0, len(payload), 7):
            sock.sendall(payload[index : index + 7])
        data = b""
        while not data.endswith(END):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    assert segments(data[1:-2].decode())["MSA"][1] == "AA"


def test_peers_off_the_allow_list_are_disconnected(
    settings: Settings, start_server: type[RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("CMFHIR_MLLP_PORT", str(port))
    monkeypatch.setenv("CMFHIR_MLLP_HOST", "127.0.0.1")
    monkeypatch.setenv("CMFHIR_MLLP_ALLOW", "10.0.0.0/8")
    unique = tag()
    with start_server(settings) as running:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            try:
                sock.sendall(frame(sample("ADT04-251.hl7", unique)))
                received = sock.recv(65536)
            except ConnectionResetError:
                received = b""
        assert received == b""
        with httpx.Client(base_url=running.base, timeout=30) as client:
            assert search(client, f"Patient?identifier=MRN12345{unique}") == []


def test_no_listener_unless_asked(client: httpx.Client) -> None:
    # The session's server was started without CMFHIR_MLLP_PORT: nothing listens on 2575.
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", 2575)) != 0


def test_serve_option_sets_the_listener_port(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import os

    from cmfhir.commands.exchange import add_commands

    monkeypatch.setenv("CMFHIR_MLLP_PORT", "")  # restored (unset) after the test
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve")
    add_commands(commands)
    args = parser.parse_args(["serve", "--mllp-port", "2575"])
    assert args.mllp_port == 2575
    assert os.environ["CMFHIR_MLLP_PORT"] == "2575"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_mllp_over_tls(
    settings: Settings,
    start_server: type[RunningServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    port = free_port()
    monkeypatch.setenv("CMFHIR_MLLP_PORT", str(port))
    monkeypatch.setenv("CMFHIR_MLLP_HOST", "127.0.0.1")
    monkeypatch.setenv("CMFHIR_MLLP_TLS_CERT", str(cert))
    monkeypatch.setenv("CMFHIR_MLLP_TLS_KEY", str(key))
    unique = tag()
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    with start_server(settings):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as sock,
        ):
            ack = segments(_exchange(sock, sample("ADT04-251.hl7", unique)))
        assert ack["MSA"][1] == "AA"
        # A plain-text peer gets no ACK.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as plain:
            plain.sendall(frame(sample("ADT04-251.hl7", tag())))
            try:
                answer = plain.recv(65536)
            except ConnectionResetError:
                answer = b""
            assert START not in answer


def test_every_sample_and_edge_case_over_one_socket(mllp: tuple[int, str]) -> None:
    """The shared samples (each event type) and the hand-written edge cases, over MLLP:
    the same answers the HTTP endpoint gives (tests/exchange/test_hl7v2.py), on one
    connection."""
    from tests.exchange.test_hl7v2 import SAMPLES, adt

    port, base = mllp
    unique = tag()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:

        def code(message: str) -> list[str]:
            return segments(_exchange(sock, message))["MSA"]

        def err(message: str) -> list[str]:
            answer = segments(_exchange(sock, message))
            return [answer["MSA"][1], answer["ERR"][2], answer["ERR"][3].split("^")[0]]

        for name, _, _ in SAMPLES:
            # Each sample made unique on its own, as the HTTP test does; an A08 updates a
            # visit admitted first.
            own = f"{unique}{name[4:6]}{name[-6:-4]}"
            if "A08" in name:
                assert code(sample("ADT-A01-02.hl7", own, MSG00001="ADMIT"))[1] == "AA"
            assert code(sample(name, own))[1] == "AA", name
        missing_pid3 = adt("A01", f"C1{unique}", "", visit=f"V1{unique}", name=f"NOID{unique}^X")
        assert err(missing_pid3) == ["AE", "PID^1^3", "101"]
        assert err(adt("A99", f"C2{unique}", f"P2{unique}", visit=f"V2{unique}"))[0] == "AR"
        bad_date = adt("A01", f"C3{unique}", f"P3{unique}", visit=f"V3{unique}", admit="20240230")
        assert err(bad_date) == ["AE", "PV1^1^44", "102"]
        admit = adt("A01", f"C4{unique}", f"P4{unique}", visit=f"V4{unique}")
        assert code(admit)[1:3] == ["AA", f"C4{unique}"]
        assert code(admit)[1] == "AA"  # the same MSH-10 again: answered, nothing changed
        assert code(adt("A04", f"C5{unique}", f"S5{unique}", visit=f"V5{unique}"))[1] == "AA"
        merge = adt("A40", f"C6{unique}", f"S5{unique}", mrg=f"P4{unique}")
        assert code(merge)[1] == "AA"
    with httpx.Client(base_url=base, timeout=30) as client:
        for name, mrn, visit in SAMPLES:
            own = f"{unique}{name[4:6]}{name[-6:-4]}"
            assert search(client, f"Patient?identifier={mrn}{own}"), name
            if visit is not None:
                assert len(search(client, f"Encounter?identifier={visit}{own}")) == 1, name
        assert search(client, f"Patient?family=NOID{unique}") == []
        assert search(client, f"Patient?identifier=P2{unique}") == []
        assert search(client, f"Patient?identifier=P3{unique}") == []
        # The merge: the prior record marked replaced, its visit moved to the survivor, who
        # now carries both identifiers.
        [prior] = [
            p for p in search(client, f"Patient?identifier=P4{unique}") if p.get("active") is False
        ]
        assert prior["link"][0]["type"] == "replaced-by"
        survivor = prior["link"][0]["other"]["reference"]
        [moved] = search(client, f"Encounter?identifier=V4{unique}")
        assert moved["subject"]["reference"] == survivor
