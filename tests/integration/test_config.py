"""Configuration as an operator meets it: --check, clear errors naming the key, the generated reference."""
import os
import subprocess

from wsp import BIN, ROOT, SECRET


def run(*args, cwd=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=10, cwd=cwd)


def write(tmp_path, text):
    p = tmp_path / "c.ini"
    p.write_text(text)
    return str(p)


def test_example_config_is_valid():
    r = run("--check", "--config", os.path.join(ROOT, "wsproxy.example.ini"))
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stdout


def test_unknown_key_names_section_and_key(tmp_path):
    r = run("--check", "--config", write(tmp_path, "[server]\nlisten = 127.0.0.1:1\nbogus = 1\n"))
    assert r.returncode == 2
    assert "unknown key [server] bogus" in r.stderr


def test_every_bad_value_is_reported_at_once(tmp_path):
    text = ("[server]\nmax_message_size = lots\nhandshake_timeout = 10 parsecs\n"
            "[store]\nsynchronous = sometimes\n[log]\nlevel = loud\n")
    r = run("--check", "--config", write(tmp_path, text))
    assert r.returncode == 2
    for needle in ("[server] max_message_size", "[server] handshake_timeout", "[store] synchronous",
                   "[log] level"):
        assert needle in r.stderr, r.stderr


def test_units_are_accepted(tmp_path):
    text = ("[server]\nmax_message_size = 64KiB\nhandshake_timeout = 500ms\nclose_timeout = 1m\n"
            "[limits]\nsend_queue = 2MiB\n[auth]\njwt_secret = " + SECRET + "\n")
    r = run("--check", "--config", write(tmp_path, text))
    assert r.returncode == 0, r.stderr


def test_flags_override_and_are_validated(tmp_path):
    r = run("--check", "--listen", "nonsense")
    assert r.returncode == 2 and "[server] listen" in r.stderr
    ok = write(tmp_path, "[auth]\njwt_secret = " + SECRET + "\n")
    r = run("--check", "--config", ok, "--listen", "127.0.0.1:9", "--db", str(tmp_path / "x.db"))
    assert r.returncode == 0, r.stderr


def test_check_loads_keys_and_certificates(tmp_path):
    # A config that parses but cannot start (no secret, missing key file, missing certificate) fails
    # --check with exit 2, so an init system never restart-loops on it.
    r = run("--check", "--config", write(tmp_path, "[auth]\njwt_secret =\n"))
    assert r.returncode == 2 and "secret" in r.stderr, r.stderr
    r = run("--check", "--config", write(tmp_path, "[auth]\njwt_alg = RS256\n"
                                                  "jwt_public_key = /nonexistent.pem\n"))
    assert r.returncode == 2 and "/nonexistent.pem" in r.stderr, r.stderr
    r = run("--check", "--config", write(tmp_path, "[auth]\njwt_secret = " + SECRET + "\n"
                                                  "[tls]\ncert = /nonexistent.crt\nkey = /nonexistent.key\n"))
    assert r.returncode == 2 and "[tls] cert /nonexistent.crt" in r.stderr, r.stderr
    assert "No such file" in r.stderr


def test_missing_config_file_is_an_error(tmp_path):
    r = run("--check", "--config", str(tmp_path / "nope.ini"))
    assert r.returncode == 2 and "cannot open" in r.stderr


def test_tls_needs_cert_and_key_together(tmp_path):
    r = run("--check", "--config", write(tmp_path, "[tls]\ncert = /x.pem\n"))
    assert r.returncode == 2 and "[tls] cert and key" in r.stderr


def test_usage_errors_exit_2():
    assert run("--no-such-flag").returncode == 2
    assert run("stray").returncode == 2
    assert run("--help").returncode == 0


def test_config_reference_doc_matches_binary():
    gen = subprocess.run(["sh", os.path.join(ROOT, "scripts", "gen-config-doc.sh"), BIN],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    with open(os.path.join(ROOT, "docs", "config.md")) as f:
        assert f.read() == gen, "docs/config.md is stale: run `make docs`"


def test_default_store_directory_is_created(tmp_path):
    from wsp import Server
    srv = Server(str(tmp_path), store={"path": str(tmp_path / "sub" / "w.db")}).start()
    try:
        assert os.path.exists(tmp_path / "sub" / "w.db")
    finally:
        srv.stop()
