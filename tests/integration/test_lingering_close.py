"""
test_lingering_close.py -- the server's last answer must reach a peer that is still sending.

Closing a socket with unread input makes the kernel send a reset, and a reset can destroy the answer
(an HTTP error, a close frame such as 1009) before the peer reads it. The server closes the way nginx
does: write the answer, shut the write side, read and discard what the peer still sends (bounded),
then close. Each case here has the client keep sending after the point where the server gives up on
the connection, and asserts that the answer arrives, followed by an orderly EOF, never a reset.
"""
import socket
import struct
import threading

import pytest

from wsp import Server, raw_connect, read_http_response, upgrade_request

WAIT = 10


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("linger"))).start()
    yield s
    s.stop()


def send_in_background(sock, data):
    """Send data from a thread (the main thread reads); returns (thread, errors list)."""
    errors = []

    def run():
        try:
            sock.sendall(data)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def read_all(sock):
    """Everything until EOF; a reset raises ConnectionResetError."""
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def upgraded(port):
    s = raw_connect(port, timeout=WAIT)
    s.sendall(upgrade_request("/echo"))
    status, _, rest = read_http_response(s)
    assert status == 101
    assert rest == b""
    return s


@pytest.mark.parametrize("trailing", [1024 * 1024 + 1, 3 * 512 * 1024])
def test_too_big_message_close_survives_a_sending_peer(srv, trailing):
    # A binary frame announcing more than max_message_size (1 MiB): the server answers 1009 from the
    # header, and the client, not knowing yet, goes on sending the announced payload.
    s = upgraded(srv.port)
    hdr = struct.pack("!BBQ", 0x82, 0x80 | 127, trailing) + b"\x00\x00\x00\x00"
    t, errors = send_in_background(s, hdr + b"\x00" * trailing)
    t.join(WAIT)
    assert not t.is_alive(), "the server stopped reading: the client's send is stuck"
    assert errors == [], f"the client's send failed: {errors}"
    data = read_all(s)
    assert data[0] == 0x88 and struct.unpack("!H", data[2:4])[0] == 1009, data[:32]
    s.close()


def test_http_error_survives_a_sending_peer(srv):
    # A request head over max_header_size (8 KiB) is answered 431 while the client is still writing.
    s = raw_connect(srv.port, timeout=WAIT)
    head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (512 * 1024)
    t, errors = send_in_background(s, head)
    t.join(WAIT)
    assert not t.is_alive() and errors == [], errors
    data = read_all(s)
    assert data.startswith(b"HTTP/1.1 431 "), data[:64]
    s.close()


def test_lingering_is_bounded_in_bytes(srv):
    # A peer that never stops sending after a failure is cut off (reset) after a bound, not served
    # forever: the server's byte bound is 2 x max_message_size.
    s = upgraded(srv.port)
    s.sendall(struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 40) + b"\x00\x00\x00\x00")
    sent = 0
    chunk = b"\x00" * 65536
    with pytest.raises(OSError):
        while sent < 64 * 1024 * 1024:
            s.sendall(chunk)
            sent += len(chunk)
    assert sent < 16 * 1024 * 1024, sent
    s.close()
