"""
test_frames.py -- RFC 6455 framing against the real wsproxy's /echo over raw sockets, on the ground of
Autobahn|Testsuite sections 1-7: framing, ping/pong, reserved bits, opcodes, fragmentation, UTF-8 and
close handling. Every bad input asserts the exact close code and that the server then drops TCP.
"""
import signal
import socket
import struct
import time

import pytest

from wsp import Server, frame, raw_ws

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MAX_MESSAGE = 1024 * 1024  # the server's default max_message_size
WAIT = 5


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("frames"))).start()
    yield s
    s.stop()


@pytest.fixture
def ws(srv):
    w = raw_ws(srv.port, "/echo")
    w.s.settimeout(WAIT)
    w.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    yield w
    w.close()


def utf8_of_len(n):
    """Valid UTF-8 of exactly n bytes mixing 1-, 2-, 3- and 4-byte characters."""
    unit = "aé€😀".encode()  # 1 + 2 + 3 + 4 bytes
    out = unit * (n // len(unit))
    return out + b"z" * (n - len(out))


def binary_of_len(n):
    return bytes(i & 0xFF for i in range(n))


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def send_bytewise(ws, data):
    for i in range(len(data)):
        ws.send(data[i:i + 1])


def send_chunked(ws, data, size, delay=0.0):
    for i in range(0, len(data), size):
        ws.send(data[i:i + size])
        if delay:
            time.sleep(delay)


def read_to_eof(ws):
    """Every frame until the server closes TCP: (frames, closed)."""
    frames = []
    try:
        while True:
            frames.append(ws.recv_frame())
    except (EOFError, ConnectionResetError):
        return frames, True
    except socket.timeout:
        return frames, False


def expect_fail(ws, code):
    """The very next frame is a close with this code (nothing echoed first), then TCP goes."""
    fin, op, payload = ws.recv_frame()
    assert (fin, op) == (True, CLOSE), (op, payload[:50])
    assert len(payload) >= 2
    assert struct.unpack("!H", payload[:2])[0] == code, payload
    payload[2:].decode("utf-8")  # the reason the server sends is UTF-8 itself
    rest, closed = read_to_eof(ws)
    assert rest == [], "nothing may follow a close frame"
    assert closed, "the server must drop TCP after failing the connection"


def expect_echo(ws, op, payload):
    got = ws.recv_frame()
    assert got[0] is True and got[1] == op, got[:2]
    assert got[2] == payload, (len(got[2]), len(payload))


def close_normally(ws):
    ws.send(frame(CLOSE, close_payload(1000)))
    frames, closed = read_to_eof(ws)
    assert frames == [(True, CLOSE, close_payload(1000))]
    assert closed


# ---- section 1: framing ----

SIZES = [0, 1, 125, 126, 127, 128, 65535, 65536, 65537, 200000]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", [TEXT, BINARY], ids=["text", "binary"])
def test_frames_echo_sizes(ws, op, size):
    payload = utf8_of_len(size) if op == TEXT else binary_of_len(size)
    ws.send(frame(op, payload))
    expect_echo(ws, op, payload)
    close_normally(ws)


@pytest.mark.parametrize("op", [TEXT, BINARY], ids=["text", "binary"])
def test_frames_echo_max_message_size(ws, op):
    payload = utf8_of_len(MAX_MESSAGE) if op == TEXT else binary_of_len(MAX_MESSAGE)
    ws.send(frame(op, payload))
    expect_echo(ws, op, payload)


@pytest.mark.parametrize("chunk", [1, 7, 997])
def test_frames_echo_chopped(ws, chunk):
    payload = binary_of_len(300 if chunk == 1 else 65536 + 3)
    send_chunked(ws, frame(BINARY, payload), chunk)
    expect_echo(ws, BINARY, payload)


def test_frames_many_messages_in_one_write(ws):
    msgs = [utf8_of_len(n) for n in (0, 3, 125, 126, 1000)]
    ws.send(b"".join(frame(TEXT, m) for m in msgs))
    for m in msgs:
        expect_echo(ws, TEXT, m)


def test_frames_fed_one_byte_at_a_time(ws):
    data = (frame(TEXT, b"Hello") + frame(BINARY, binary_of_len(130)) + frame(PING, b"pp") +
            frame(TEXT, b"fr", fin=False) + frame(CONT, b"ag", fin=False) + frame(CONT, b"!") +
            frame(CLOSE, close_payload(1000, b"bye")))
    send_bytewise(ws, data)
    frames, closed = read_to_eof(ws)
    assert frames == [(True, TEXT, b"Hello"), (True, BINARY, binary_of_len(130)),
                      (True, PONG, b"pp"), (True, TEXT, b"frag!"),
                      (True, CLOSE, close_payload(1000))]
    assert closed


def test_frames_unmasked_client_frame_1002(ws):
    ws.send(frame(TEXT, b"Hello", mask=False))
    expect_fail(ws, 1002)


def test_frames_unmasked_after_valid_frame_1002(ws):
    ws.send(frame(TEXT, b"ok"))
    expect_echo(ws, TEXT, b"ok")
    ws.send(frame(PING, b"", mask=False))
    expect_fail(ws, 1002)


def test_frames_64bit_length_top_bit_1002(ws):
    ws.send(frame(BINARY, b"", length_override=1 << 63))
    expect_fail(ws, 1002)


def test_frames_64bit_length_all_ones_1002(ws):
    ws.send(struct.pack("!BBQ", 0x82, 0xFF, 0xFFFFFFFFFFFFFFFF) + b"\x00\x00\x00\x00")
    expect_fail(ws, 1002)


# ---- max_message_size (1009 as soon as the length is known) ----

def test_frames_too_big_header_only_1009(ws):
    # Only the header of a 2 MiB frame: the close must come without any payload sent.
    ws.send(frame(BINARY, b"", length_override=2 * MAX_MESSAGE))
    expect_fail(ws, 1009)


def test_frames_too_big_text_header_only_1009(ws):
    ws.send(frame(TEXT, b"", length_override=(1 << 62)))
    expect_fail(ws, 1009)


def test_frames_one_over_max_1009(ws):
    ws.send(frame(BINARY, b"", length_override=MAX_MESSAGE + 1))
    expect_fail(ws, 1009)


def test_frames_too_big_across_fragments_1009(ws):
    part = binary_of_len(600 * 1024)
    ws.send(frame(BINARY, part, fin=False))
    ws.send(frame(CONT, b"", length_override=600 * 1024))  # header only: the sum is over 1 MiB
    expect_fail(ws, 1009)


def test_frames_fragments_up_to_max_echo(ws):
    a, b = binary_of_len(MAX_MESSAGE // 2), binary_of_len(MAX_MESSAGE - MAX_MESSAGE // 2)
    ws.send(frame(BINARY, a, fin=False) + frame(CONT, b))
    expect_echo(ws, BINARY, a + b)


# ---- section 2: ping/pong ----

@pytest.mark.parametrize("payload", [b"", b"x", b"hello", bytes(range(125)), utf8_of_len(125),
                                     b"\xff\xfe\x00"],
                         ids=["empty", "1", "text", "binary-125", "utf8-125", "not-utf8"])
def test_frames_ping_pong_same_payload(ws, payload):
    ws.send(frame(PING, payload))
    assert ws.recv_frame() == (True, PONG, payload)
    close_normally(ws)


def test_frames_ping_126_1002(ws):
    ws.send(frame(PING, bytes(126)))
    expect_fail(ws, 1002)


def test_frames_ping_bytewise(ws):
    send_bytewise(ws, frame(PING, b"chopped ping"))
    assert ws.recv_frame() == (True, PONG, b"chopped ping")


def test_frames_ten_pings_ten_pongs_in_order(ws):
    ws.send(b"".join(frame(PING, b"ping %d" % i) for i in range(10)))
    for i in range(10):
        assert ws.recv_frame() == (True, PONG, b"ping %d" % i)


@pytest.mark.parametrize("payload", [b"", b"unsolicited", bytes(125)], ids=["empty", "text", "125"])
def test_frames_unsolicited_pong_ignored(ws, payload):
    ws.send(frame(PONG, payload) + frame(TEXT, b"after pong"))
    assert ws.recv_frame() == (True, TEXT, b"after pong")
    ws.send(frame(PING, b"p"))
    assert ws.recv_frame() == (True, PONG, b"p")


# ---- section 3: reserved bits ----

@pytest.mark.parametrize("rsv", range(1, 8))
def test_frames_rsv_text_1002(ws, rsv):
    ws.send(frame(TEXT, b"Hello", rsv=rsv))
    expect_fail(ws, 1002)


@pytest.mark.parametrize("op", [BINARY, PING, PONG, CLOSE, CONT], ids=["binary", "ping", "pong",
                                                                      "close", "cont"])
def test_frames_rsv_other_opcodes_1002(ws, op):
    if op == CONT:
        ws.send(frame(TEXT, b"a", fin=False))
    ws.send(frame(op, close_payload(1000) if op == CLOSE else b"x", rsv=4))
    expect_fail(ws, 1002)


def test_frames_rsv_after_valid_frame_1002(ws):
    ws.send(frame(TEXT, b"valid") + frame(TEXT, b"bad", rsv=1) + frame(PING, b"never"))
    expect_echo(ws, TEXT, b"valid")
    expect_fail(ws, 1002)


# ---- section 4: opcodes ----

@pytest.mark.parametrize("op", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
@pytest.mark.parametrize("payload", [b"", b"reserved"], ids=["empty", "payload"])
def test_frames_reserved_opcode_1002(ws, op, payload):
    ws.send(frame(op, payload))
    expect_fail(ws, 1002)


@pytest.mark.parametrize("op", [5, 0xD])
def test_frames_reserved_opcode_after_valid_frame_1002(ws, op):
    ws.send(frame(TEXT, b"first") + frame(op, b"x") + frame(PING, b"never"))
    expect_echo(ws, TEXT, b"first")
    expect_fail(ws, 1002)


@pytest.mark.parametrize("op", [3, 0xB])
def test_frames_reserved_opcode_inside_message_1002(ws, op):
    ws.send(frame(TEXT, b"frag", fin=False) + frame(op, b"", fin=op < 8))
    expect_fail(ws, 1002)


# ---- control frames ----

@pytest.mark.parametrize("op", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
def test_frames_control_over_125_1002(ws, op):
    payload = close_payload(1000, b"r" * 124) if op == CLOSE else bytes(126)
    assert len(payload) == 126
    ws.send(frame(op, payload))
    expect_fail(ws, 1002)


@pytest.mark.parametrize("op", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
def test_frames_control_64bit_length_1002(ws, op):
    ws.send(frame(op, b"", length_override=70000))
    expect_fail(ws, 1002)


@pytest.mark.parametrize("op", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
def test_frames_fragmented_control_1002(ws, op):
    payload = close_payload(1000) if op == CLOSE else b"frag"
    ws.send(frame(op, payload, fin=False) + frame(CONT, b"ment"))
    expect_fail(ws, 1002)


# ---- section 5: fragmentation ----

@pytest.mark.parametrize("op", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("parts", [
    [b"Hel", b"lo"],
    [b"a", b"b", b"c", b"d", b"e"],
    [b"", b"x", b"", b"y", b""],
    [b"", b""],
    [b"big" * 30000, b"-", b"more" * 20000],
], ids=["2", "5", "empty-fragments", "all-empty", "large"])
def test_frames_fragmented_echoed_as_one(ws, op, parts):
    data = frame(op, parts[0], fin=False)
    for p in parts[1:-1]:
        data += frame(CONT, p, fin=False)
    data += frame(CONT, parts[-1])
    ws.send(data)
    expect_echo(ws, op, b"".join(parts))
    close_normally(ws)


def test_frames_fragments_sent_with_delays(ws):
    ws.send(frame(TEXT, b"slow ", fin=False))
    time.sleep(0.1)
    ws.send(frame(CONT, b"frag", fin=False))
    time.sleep(0.1)
    ws.send(frame(CONT, b"ments"))
    expect_echo(ws, TEXT, b"slow fragments")


def test_frames_ping_between_fragments(ws):
    ws.send(frame(TEXT, b"Hel", fin=False) + frame(PING, b"mid") + frame(CONT, b"lo"))
    assert ws.recv_frame() == (True, PONG, b"mid")
    expect_echo(ws, TEXT, b"Hello")


def test_frames_ping_pong_between_fragments_bytewise(ws):
    data = (frame(TEXT, b"frag", fin=False) + frame(PING, b"p1") + frame(CONT, b"ment", fin=False) +
            frame(PONG, b"unsolicited") + frame(PING, b"p2") + frame(CONT, b"ed"))
    send_bytewise(ws, data)
    assert ws.recv_frame() == (True, PONG, b"p1")
    assert ws.recv_frame() == (True, PONG, b"p2")
    expect_echo(ws, TEXT, b"fragmented")


def test_frames_pong_answered_before_message_completes(ws):
    """The pong for a ping inside an open message is sent before the final fragment arrives."""
    ws.send(frame(BINARY, b"open", fin=False) + frame(PING, b"now"))
    assert ws.recv_frame() == (True, PONG, b"now")
    ws.send(frame(CONT, b"-done"))
    expect_echo(ws, BINARY, b"open-done")


def test_frames_messages_after_fragmented_one(ws):
    ws.send(frame(TEXT, b"one", fin=False) + frame(CONT, b"two") + frame(BINARY, b"three") +
            frame(BINARY, b"f", fin=False) + frame(CONT, b"our"))
    expect_echo(ws, TEXT, b"onetwo")
    expect_echo(ws, BINARY, b"three")
    expect_echo(ws, BINARY, b"four")


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
@pytest.mark.parametrize("payload", [b"", b"orphan"], ids=["empty", "payload"])
def test_frames_cont_without_start_1002(ws, fin, payload):
    ws.send(frame(CONT, payload, fin=fin))
    expect_fail(ws, 1002)


def test_frames_cont_after_finished_message_1002(ws):
    ws.send(frame(TEXT, b"done") + frame(CONT, b"late"))
    expect_echo(ws, TEXT, b"done")
    expect_fail(ws, 1002)


@pytest.mark.parametrize("first,second", [(TEXT, TEXT), (TEXT, BINARY), (BINARY, TEXT),
                                          (BINARY, BINARY)],
                         ids=["text-text", "text-binary", "binary-text", "binary-binary"])
@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
def test_frames_new_message_while_fragmented_1002(ws, first, second, fin):
    ws.send(frame(first, b"open", fin=False) + frame(second, b"new", fin=fin))
    expect_fail(ws, 1002)


# ---- section 6: UTF-8 ----

VALID_UTF8 = [
    ("ascii", b"Hello-\x7f"),
    ("kosme", "κόσμε".encode()),
    ("nul", b"\x00"),
    ("2-byte-min", b"\xc2\x80"),
    ("3-byte-min", b"\xe0\xa0\x80"),
    ("4-byte-min", b"\xf0\x90\x80\x80"),
    ("last-before-surrogates", b"\xed\x9f\xbf"),
    ("first-after-surrogates", b"\xee\x80\x80"),
    ("U+FFFD", b"\xef\xbf\xbd"),
    ("U+FFFF-noncharacter", b"\xef\xbf\xbf"),
    ("U+10FFFF", b"\xf4\x8f\xbf\xbf"),
    ("mixed", "aé€😀 ☃ 𝄞".encode()),
]

INVALID_UTF8 = [
    ("lone-continuation", b"\x80"),
    ("continuations", b"a\x80\xbf"),
    ("2-byte-truncated", b"\xc3"),
    ("3-byte-truncated", b"\xe2\x82"),
    ("4-byte-truncated", b"\xf0\x9f\x98"),
    ("overlong-2", b"\xc0\xaf"),
    ("overlong-2-c1", b"\xc1\xbf"),
    ("overlong-3", b"\xe0\x80\xaf"),
    ("overlong-4", b"\xf0\x80\x80\xaf"),
    ("overlong-nul", b"\xc0\x80"),
    ("surrogate-high", b"\xed\xa0\x80"),
    ("surrogate-low", b"\xed\xbf\xbf"),
    ("surrogate-pair", b"\xed\xa0\x80\xed\xb0\x80"),
    ("above-10FFFF", b"\xf4\x90\x80\x80"),
    ("f5", b"\xf5\x80\x80\x80"),
    ("fe", b"\xfe"),
    ("ff", b"\xff"),
    ("5-byte", b"\xf8\x88\x80\x80\x80"),
    ("start-then-ascii", b"\xe2a"),
    ("kosme-broken", "κόσμε".encode() + b"\xed\xa0\x80edited"),
]


@pytest.mark.parametrize("payload", [v for _, v in VALID_UTF8], ids=[k for k, _ in VALID_UTF8])
def test_frames_valid_utf8_echoed(ws, payload):
    ws.send(frame(TEXT, payload))
    expect_echo(ws, TEXT, payload)


@pytest.mark.parametrize("payload", [v for _, v in INVALID_UTF8], ids=[k for k, _ in INVALID_UTF8])
def test_frames_invalid_utf8_1007(ws, payload):
    ws.send(frame(TEXT, payload))
    expect_fail(ws, 1007)


@pytest.mark.parametrize("payload", [v for _, v in INVALID_UTF8], ids=[k for k, _ in INVALID_UTF8])
def test_frames_invalid_utf8_binary_is_fine(ws, payload):
    ws.send(frame(BINARY, payload))
    expect_echo(ws, BINARY, payload)


@pytest.mark.parametrize("text", ["aé€😀", "😀😀", "κόσμε", "€"])
def test_frames_valid_utf8_split_at_every_byte(ws, text):
    """Every split point, including inside a code point, across two fragments, echoes whole."""
    data = text.encode()
    for i in range(len(data) + 1):
        ws.send(frame(TEXT, data[:i], fin=False) + frame(CONT, data[i:]))
        expect_echo(ws, TEXT, data)


def test_frames_valid_utf8_one_byte_per_fragment(ws):
    data = "κόσμε 😀 €".encode()
    msg = frame(TEXT, data[:1], fin=False)
    for i in range(1, len(data) - 1):
        msg += frame(CONT, data[i:i + 1], fin=False)
    msg += frame(CONT, data[-1:])
    ws.send(msg)
    expect_echo(ws, TEXT, data)


@pytest.mark.parametrize("payload", [v for _, v in INVALID_UTF8], ids=[k for k, _ in INVALID_UTF8])
def test_frames_invalid_utf8_split_across_fragments_1007(ws, payload):
    data = b"ok" + payload
    ws.send(frame(TEXT, data[:3], fin=False) + frame(CONT, data[3:]))
    expect_fail(ws, 1007)


def test_frames_text_ends_inside_code_point_1007(ws):
    ws.send(frame(TEXT, b"abc\xe2", fin=False) + frame(CONT, b"\x82"))
    expect_fail(ws, 1007)


@pytest.mark.parametrize("bad", [b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90"],
                         ids=["ff", "surrogate", "overlong", "above-max"])
def test_frames_invalid_utf8_fails_fast_first_fragment(ws, bad):
    """1007 arrives after the first fragment alone; the final fragment is never sent."""
    ws.send(frame(TEXT, b"valid start " + bad + b" more", fin=False))
    expect_fail(ws, 1007)


def test_frames_invalid_utf8_fails_fast_middle_fragment(ws):
    ws.send(frame(TEXT, "κόσμε".encode(), fin=False) + frame(CONT, b"\xce\xba\xe1\xbd\xb9\xcf\x83"
                                                                    b"\xce\xbc\xce\xb5\xed\xa0\x80",
                                                                    fin=False))
    expect_fail(ws, 1007)


def test_frames_invalid_utf8_fails_fast_inside_frame(ws):
    """A bad byte early in a large frame fails before the rest of that frame's payload arrives."""
    payload = b"abc\xffdef" + bytes(60000)
    whole = frame(TEXT, payload)
    ws.send(whole[:8 + 10])  # header (2 + 2 + 4) and the first 10 payload bytes
    expect_fail(ws, 1007)


def test_frames_utf8_state_reset_between_messages(ws):
    ws.send(frame(TEXT, "é".encode()) + frame(TEXT, b"plain"))
    expect_echo(ws, TEXT, "é".encode())
    expect_echo(ws, TEXT, b"plain")


# ---- section 7: close handling ----

def test_frames_close_1000_echoed(ws):
    ws.send(frame(CLOSE, close_payload(1000)))
    frames, closed = read_to_eof(ws)
    assert frames == [(True, CLOSE, close_payload(1000))]
    assert closed


def test_frames_close_empty_echoed_empty(ws):
    ws.send(frame(CLOSE, b""))
    frames, closed = read_to_eof(ws)
    assert frames == [(True, CLOSE, b"")]
    assert closed


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 3999, 4000, 4999])
def test_frames_close_valid_code_echoed(ws, code):
    ws.send(frame(CLOSE, close_payload(code, b"reason")))
    frames, closed = read_to_eof(ws)
    assert len(frames) == 1
    fin, op, payload = frames[0]
    assert (fin, op) == (True, CLOSE)
    assert struct.unpack("!H", payload[:2])[0] == code
    payload[2:].decode("utf-8")
    assert closed


@pytest.mark.parametrize("reason", [b"", b"bye", "κόσμε".encode(), b"r" * 123,
                                    "€".encode() * 41],
                         ids=["none", "ascii", "utf8", "123", "utf8-123"])
def test_frames_close_with_reason_echoed(ws, reason):
    ws.send(frame(CLOSE, close_payload(1000, reason)))
    frames, closed = read_to_eof(ws)
    assert [f[:2] for f in frames] == [(True, CLOSE)]
    assert struct.unpack("!H", frames[0][2][:2])[0] == 1000
    assert closed


def test_frames_close_1_byte_payload_1002(ws):
    ws.send(frame(CLOSE, b"\x03"))
    expect_fail(ws, 1002)


@pytest.mark.parametrize("code", [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                  5000, 65535])
def test_frames_close_invalid_code_1002(ws, code):
    ws.send(frame(CLOSE, close_payload(code)))
    expect_fail(ws, 1002)


@pytest.mark.parametrize("reason", [b"\xff", b"bye\xed\xa0\x80", b"\xe2\x82", b"\xc0\xaf"],
                         ids=["ff", "surrogate", "truncated", "overlong"])
def test_frames_close_reason_invalid_utf8_1007(ws, reason):
    ws.send(frame(CLOSE, close_payload(1000, reason)))
    expect_fail(ws, 1007)


@pytest.mark.parametrize("after", [frame(TEXT, b"late"), frame(PING, b"late"),
                                   frame(CLOSE, close_payload(1000)), frame(BINARY, b"", rsv=1),
                                   frame(TEXT, b"x", mask=False), b"\xff" * 20],
                         ids=["text", "ping", "second-close", "rsv", "unmasked", "garbage"])
def test_frames_data_after_close_ignored(ws, after):
    ws.send(frame(CLOSE, close_payload(1000)) + after)
    frames, closed = read_to_eof(ws)
    assert frames == [(True, CLOSE, close_payload(1000))]
    assert closed


def test_frames_close_after_echo(ws):
    ws.send(frame(TEXT, b"Hello") + frame(CLOSE, close_payload(1000)))
    frames, closed = read_to_eof(ws)
    assert frames == [(True, TEXT, b"Hello"), (True, CLOSE, close_payload(1000))]
    assert closed


def test_frames_close_after_large_message(ws):
    payload = binary_of_len(256 * 1024)
    ws.send(frame(BINARY, payload) + frame(CLOSE, close_payload(1000)))
    frames, closed = read_to_eof(ws)
    assert frames == [(True, BINARY, payload), (True, CLOSE, close_payload(1000))]
    assert closed


def test_frames_close_inside_fragmented_message(ws):
    """A close between fragments is legal; the unfinished message is dropped, the code echoed."""
    ws.send(frame(TEXT, b"never", fin=False) + frame(CLOSE, close_payload(1000)) +
            frame(CONT, b"finished"))
    frames, closed = read_to_eof(ws)
    assert frames == [(True, CLOSE, close_payload(1000))]
    assert closed


def test_frames_close_bytewise(ws):
    send_bytewise(ws, frame(CLOSE, close_payload(4000, b"chopped")))
    frames, closed = read_to_eof(ws)
    assert frames == [(True, CLOSE, close_payload(4000))]
    assert closed


def test_frames_server_closes_tcp_after_close_exchange(ws):
    """The server, having echoed the close, drops TCP itself; the client never closes first."""
    ws.send(frame(CLOSE, close_payload(1000)))
    assert ws.recv_frame() == (True, CLOSE, close_payload(1000))
    started = time.monotonic()
    assert ws.is_closed_by_peer(timeout=WAIT)
    assert time.monotonic() - started < 2


def test_frames_server_survives_abrupt_disconnect(srv):
    """A client that vanishes mid-message does not disturb the next one."""
    w = raw_ws(srv.port, "/echo")
    w.send(frame(BINARY, b"", length_override=1000)[:6] + b"part")
    w.close()
    w2 = raw_ws(srv.port, "/echo")
    try:
        w2.s.settimeout(WAIT)
        w2.send(frame(TEXT, b"alive"))
        assert w2.recv_frame() == (True, TEXT, b"alive")
    finally:
        w2.close()


@pytest.mark.parametrize("reply", [True, False], ids=["peer-answers", "peer-silent"])
def test_frames_server_initiated_close_waits_bounded(make_server, reply):
    """On SIGTERM the server sends 1001, then closes TCP on the peer's close or after close_timeout."""
    s = make_server(server={"close_timeout": "1s", "drain_timeout": "3s"}).start()
    w = raw_ws(s.port, "/echo")
    try:
        w.s.settimeout(WAIT)
        s.signal(signal.SIGTERM)
        fin, op, payload = w.recv_frame()
        assert (fin, op) == (True, CLOSE)
        assert struct.unpack("!H", payload[:2])[0] == 1001
        started = time.monotonic()
        if reply:
            w.send(frame(CLOSE, close_payload(1001)))
        assert w.is_closed_by_peer(timeout=WAIT)
        elapsed = time.monotonic() - started
        if reply:
            assert elapsed < 0.5, elapsed
        else:
            assert 0.8 <= elapsed < 2.5, elapsed
        assert s.proc.wait(timeout=WAIT) == 0
    finally:
        w.close()
