"""
test_tls.py -- standalone wsproxy with its own TLS ([tls] cert/key): wss with a certificate made at test
time, TLS 1.2/1.3 accepted and 1.0/1.1 refused (openssl s_client, with a control server proving the
local client can still speak the old versions), and a start that stops on unusable certificate files.
"""
import asyncio
import os
import socket
import ssl
import subprocess
import time

import pytest
import websockets

from wsp import Server, make_token


def make_cert(d, name="server"):
    crt, key = os.path.join(d, name + "-cert.pem"), os.path.join(d, name + "-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return crt, key


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(str(tmp_path_factory.mktemp("tls-cert")))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, cert):
    srv = Server(str(tmp_path_factory.mktemp("tls-wsp")), tls={"cert": cert[0], "key": cert[1]})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def old_tls_server(tmp_path_factory, cert):
    """Control: an openssl s_server that still accepts TLS 1.0 and 1.1."""
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    p = port.getsockname()[1]
    port.close()
    log = open(str(tmp_path_factory.mktemp("old-tls") / "s_server.log"), "wb")
    proc = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{p}", "-cert", cert[0],
                             "-key", cert[1], "-min_protocol", "TLSv1", "-cipher", "DEFAULT@SECLEVEL=0",
                             "-www"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", p), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, "openssl s_server exited"
                time.sleep(0.025)
        yield p
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def s_client(port, cert, *args):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                        "-CAfile", cert[0], "-verify_return_error", *args],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15)
    return r.returncode, r.stdout + r.stderr


def run(coro, timeout=20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_tls_wss_echo_and_chat(tls_server, cert):
    ctx = ssl.create_default_context(cafile=cert[0])
    base = f"wss://127.0.0.1:{tls_server.port}"

    async def talk():
        async with websockets.connect(base + "/echo", ssl=ctx, open_timeout=5, close_timeout=2) as ws:
            await ws.send("hello over tls")
            assert await asyncio.wait_for(ws.recv(), 5) == "hello over tls"
            await ws.send(b"\x00\x01binary" * 1000)
            assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01binary" * 1000
        async with websockets.connect(f"{base}/ws?token={make_token('alice')}", ssl=ctx,
                                      open_timeout=5, close_timeout=2) as ws:
            welcome = await asyncio.wait_for(ws.recv(), 5)
            assert '"welcome"' in welcome and '"alice"' in welcome

    run(talk())
    assert tls_server.db_rows("SELECT user FROM sessions") == [("alice",)]


def test_tls_port_does_not_speak_plain_http(tls_server):
    s = socket.create_connection(("127.0.0.1", tls_server.port), timeout=5)
    try:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        data = b""
        try:
            while len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        # never served as plain HTTP: a readable 400 that says the port speaks TLS, as nginx gives
        assert data.startswith(b"HTTP/1.1 400 ") and b"101" not in data and b"TLS" in data, data
    finally:
        s.close()


@pytest.mark.parametrize("version, name", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_modern_versions_accepted(tls_server, cert, version, name):
    rc, out = s_client(tls_server.port, cert, version)
    assert rc == 0, out
    # s_client prints "Protocol  : X" only once a TLS 1.3 session ticket arrived (timing-dependent);
    # the "New, X, Cipher is" line is printed for every handshake.
    assert f"Protocol  : {name}" in out or f"New, {name}, Cipher is" in out, out
    assert "Verify return code: 0 (ok)" in out


@pytest.mark.parametrize("version, name", [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")])
def test_tls_old_versions_refused(tls_server, old_tls_server, cert, version, name):
    # OpenSSL 3 at the default security level sends the old ClientHello but rejects the old
    # signature algorithms itself, so the client is lowered to SECLEVEL=0 for both servers.
    old = ("-cipher", "DEFAULT@SECLEVEL=0")
    rc, out = s_client(old_tls_server, cert, version, *old)
    assert rc == 0 and f"Protocol  : {name}\n" in out, "control: this client cannot speak " + name
    rc, out = s_client(tls_server.port, cert, version, *old)
    assert rc != 0
    assert "alert protocol version" in out, out  # refused by the server, not given up by the client


@pytest.mark.parametrize("which", ["cert", "key", "mismatch"])
def test_tls_unusable_files_stop_the_start(tmp_path, cert, which):
    other = make_cert(str(tmp_path), "other")
    missing = str(tmp_path / "missing.pem")
    files = {"cert": {"cert": missing, "key": cert[1]},
             "key": {"cert": cert[0], "key": missing},
             "mismatch": {"cert": cert[0], "key": other[1]}}[which]
    srv = Server(str(tmp_path), tls=files).start(wait=False)
    try:
        rc = srv.proc.wait(timeout=10)
    finally:
        srv.stop()
    log = srv.log()
    # 2: a configuration error, found before anything starts (as --check finds it), so systemd's
    # RestartPreventExitStatus=2 does not restart-loop on it.
    assert rc == 2, log
    # The line names the key and the file. OpenSSL already refuses a mismatched key on load.
    if which == "mismatch":
        assert f"[tls] key {other[1]}" in log and "mismatch" in log, log
    else:
        assert f"[tls] {which}: cannot read {missing}" in log, log
    assert "listening on" not in log


def test_tls_cert_without_key_is_a_config_error(tmp_path, cert):
    srv = Server(str(tmp_path), tls={"cert": cert[0]}).start(wait=False)
    try:
        rc = srv.proc.wait(timeout=10)
    finally:
        srv.stop()
    assert rc == 2
    assert "[tls] cert and key must be set together" in srv.log()


@pytest.mark.parametrize("which", ["cert", "key"])
def test_tls_missing_file_reason_is_readable(tmp_path, cert, which):
    files = {"cert": cert[0], "key": cert[1], which: str(tmp_path / "missing.pem")}
    srv = Server(str(tmp_path), tls=files).start(wait=False)
    try:
        srv.proc.wait(timeout=10)
    finally:
        srv.stop()
    line = next((ln for ln in srv.log().splitlines() if f"[tls] {which}: " in ln), "")
    # An operator reading the journal must learn that the file is missing, not "(null)".
    assert "No such file" in line, line
