"""The simulator's HTTP layer reads requests itself (not through the email package): keep-alive,
headers in any case, and clear answers to malformed requests."""

from __future__ import annotations

import socket

from qrsync.simulator import RunningSimulator


def exchange(sim: RunningSimulator, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection; return everything the simulator sends until it closes
    the line (or 5 s pass)."""
    with socket.create_connection((sim.host, sim.port), timeout=5) as line:
        line.sendall(raw)
        received = b""
        while chunk := line.recv(65536):
            received += chunk
        return received


def test_a_keep_alive_connection_serves_several_requests(sim: RunningSimulator) -> None:
    body = b'{"grant_type": "client_credential", "appid": "wx0", "secret": "x"}'
    request = (
        b"POST /cgi-bin/stable_token HTTP/1.1\r\nHost: sim\r\ncontent-TYPE: application/json\r\n"
        b"CONTENT-LENGTH: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    closing = request.replace(b"Host: sim\r\n", b"Host: sim\r\nConnection: close\r\n")
    answers = exchange(sim, request + closing)
    assert answers.count(b"HTTP/1.1 200 OK") == 2
    assert answers.count(b'"errcode":40013') == 2  # the body was read: no such appid


def test_http_1_0_closes_after_one_answer(sim: RunningSimulator) -> None:
    answer = exchange(sim, b"GET /sim/settings HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and b'"latency_ms"' in answer


def test_a_malformed_request_line_is_a_400(sim: RunningSimulator) -> None:
    assert exchange(sim, b"HELLO\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(sim, b"GET / SPDY/3\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_a_header_without_a_colon_is_a_400(sim: RunningSimulator) -> None:
    answer = exchange(sim, b"GET /sim/settings HTTP/1.1\r\nno colon here\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")


def test_too_many_headers_is_a_431(sim: RunningSimulator) -> None:
    headers = b"".join(b"X-%d: y\r\n" % i for i in range(150))
    answer = exchange(sim, b"GET /sim/settings HTTP/1.1\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
