"""Configuration as an operator meets it: --check, clear errors naming the key, the generated reference."""
import os
import subprocess

import pytest

from wsp import BIN, PG, ROOT, SECRET


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
    assert r.returncode == 2 and "[tls] cert: cannot read /nonexistent.crt" in r.stderr, r.stderr
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


@pytest.mark.skipif(PG, reason="SQLite-specific: the server creates the directory of [store] path's file")
def test_default_store_directory_is_created(tmp_path):
    from wsp import Server
    srv = Server(str(tmp_path), store={"path": str(tmp_path / "sub" / "w.db")}).start()
    try:
        assert os.path.exists(tmp_path / "sub" / "w.db")
    finally:
        srv.stop()


# ---- --print-config: the effective configuration ----

def test_print_config_with_a_file_prints_effective_values_secrets_masked(tmp_path):
    text = ("[server]\nmax_message_size = 1048576\nhandshake_timeout = 90000ms\nclose_timeout = 0.5\n"
            "[auth]\njwt_secret = " + SECRET + "\n[api]\nkeys = k1-0123456789, k2-0123456789\n"
            "[demo]\nenabled = yes\n")
    r = run("--print-config", "--config", write(tmp_path, text), "--listen", "127.0.0.1:9")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for want in ("listen = 127.0.0.1:9", "max_message_size = 1MiB", "handshake_timeout = 90s",
                 "close_timeout = 500ms", "jwt_secret = ***", "keys = ***, ***", "enabled = true",
                 "ping_interval = 25s"):
        assert want in lines, (want, r.stdout)
    assert SECRET not in r.stdout and "k1-0123456789" not in r.stdout
    # the output is itself a valid configuration (but for the masked secrets)
    p = tmp_path / "again.ini"
    p.write_text(r.stdout.replace("jwt_secret = ***", "jwt_secret = " + SECRET))
    again = run("--print-config", "--config", str(p))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1:] == lines[1:]


def test_print_config_without_a_file_prints_the_reference_and_with_errors_exits_2(tmp_path):
    r = run("--print-config", cwd=str(tmp_path))
    assert r.returncode == 0 and "every key with its default" in r.stdout
    assert "; Address:port of the WebSocket listener" in r.stdout
    r = run("--print-config", "--config", write(tmp_path, "[server]\nbogus = 1\n"))
    assert r.returncode == 2 and "unknown key [server] bogus" in r.stderr and r.stdout == ""


# ---- every problem in one round, exit 2 ----

def test_every_problem_at_once_in_one_format_at_start_and_under_check(tmp_path):
    text = ("[server]\nlisten = 127.0.0.1:1\nbogus = 1\nmax_message_size = lots\n"
            "listen = 127.0.0.1:2\n[auth]\njwt_secret = too-short\n"
            "[tls]\ncert = /nonexistent.crt\nkey = /nonexistent.key\n")
    path = write(tmp_path, text)
    for args in (("--check",), ()):
        r = run(*args, "--config", path)
        assert r.returncode == 2, (args, r.stderr)
        errs = [ln for ln in r.stderr.splitlines() if ln.startswith("config ") and "warning" not in ln]
        assert errs == [
            f"config {path}:3: unknown key [server] bogus",
            f"config {path}:4: [server] max_message_size: bad value 'lots' (use e.g. 512, 64KiB, 1MiB)",
            f"config {path}:5: [server] listen: set twice, at line 2 and line 5 (keep one)",
            f"config {path}:7: [auth] jwt_secret: 9 bytes, use at least 32 (e.g. openssl rand -hex 32)",
            f"config {path}:9: [tls] cert: cannot read /nonexistent.crt: No such file or directory",
            f"config {path}:10: [tls] key: cannot read /nonexistent.key: No such file or directory",
        ], r.stderr
        assert "too-short" not in r.stderr


def test_a_bad_secret_value_is_masked_and_an_empty_secret_is_an_error(tmp_path):
    r = run("--check", "--config", write(tmp_path, "[auth]\n"))
    assert r.returncode == 2 and "[auth] jwt_secret: empty" in r.stderr
    r = run("--check", "--config", write(tmp_path, "[auth]\njwt_secret = " + "x" * 31 + "\n"))
    assert r.returncode == 2 and "31 bytes, use at least 32" in r.stderr
    r = run("--check", "--config", write(tmp_path, "[auth]\njwt_secret = " + "x" * 32 + "\n"))
    assert r.returncode == 0, r.stderr


def test_config_that_is_a_directory_is_an_error(tmp_path):
    for args in (("--check",), ()):
        r = run(*args, "--config", str(tmp_path))
        assert r.returncode == 2 and "is a directory" in r.stderr, r.stderr


def test_continuation_lines_are_a_syntax_error(tmp_path):
    r = run("--check", "--config",
            write(tmp_path, "[auth]\njwt_secret = " + SECRET + "\n[server]\norigins = https://a.example,\n"
                            "  b.example\n"))
    assert r.returncode == 2 and ":5: syntax error" in r.stderr, r.stderr


def test_missing_static_dir_is_a_warning_only(tmp_path):
    r = run("--check", "--config",
            write(tmp_path, "[auth]\njwt_secret = " + SECRET + "\n[server]\nstatic_dir = nowhere\n"),
            cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "warning: [server] static_dir: nowhere is not a directory" in r.stderr


def test_relative_paths_are_relative_to_the_working_directory(tmp_path):
    import time
    from wsp import free_port
    (tmp_path / "etc").mkdir()
    (tmp_path / "work").mkdir()
    conf = tmp_path / "etc" / "w.ini"
    conf.write_text(f"[server]\nlisten = 127.0.0.1:{free_port()}\nstatic_dir =\n[api]\nlisten =\n"
                    f"[auth]\njwt_secret = {SECRET}\n[store]\npath = data/deep/w.db\n")
    p = subprocess.Popen([BIN, "--config", str(conf)], cwd=str(tmp_path / "work"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not os.path.exists(tmp_path / "work" / "data" / "deep" / "w.db") and time.time() < deadline:
            assert p.poll() is None
            time.sleep(0.05)
        assert os.path.exists(tmp_path / "work" / "data" / "deep" / "w.db")
        assert not os.path.exists(tmp_path / "etc" / "data")
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_wsproxy_ini_in_the_working_directory_is_read_without_config(tmp_path):
    (tmp_path / "wsproxy.ini").write_text("[server]\nbogus = 1\n")
    r = run("--check", cwd=str(tmp_path))
    assert r.returncode == 2 and "config wsproxy.ini:2: unknown key [server] bogus" in r.stderr
    assert "/etc/wsproxy/wsproxy.ini" in run("--help").stdout


def test_a_line_over_the_parser_limit_is_an_error_not_a_cut_value(tmp_path):
    keys = ", ".join(f"key-{i:02d}-" + "k" * 30 for i in range(6))  # > 197 bytes on one line
    r = run("--check", "--config",
            write(tmp_path, "[auth]\njwt_secret = " + SECRET + "\n[api]\nkeys = " + keys + "\n"))
    assert r.returncode == 2 and ":4: line longer than 197 bytes" in r.stderr, r.stderr
