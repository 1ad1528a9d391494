"""Pytest fixtures: a running wsproxy per test (or per module) from tests/integration/wsp.py."""
import os

import pytest

from wsp import Server, pg_flush_drops

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def assert_clean_log(srv):
    """Under ASan/UBSan builds a report lands in the server log; any report fails the test."""
    if not os.path.exists(srv.log_path):
        return
    text = srv.log()
    for mark in SANITIZER_MARKS:
        assert mark not in text, f"sanitizer report in server log:\n{text[-4000:]}"


@pytest.fixture(autouse=True)
def _pg_databases():
    """WSP_STORE=postgresql: the databases of this test's Servers go once it is over."""
    yield
    pg_flush_drops()


@pytest.fixture
def server(tmp_path):
    srv = Server(str(tmp_path)).start()
    yield srv
    srv.stop()
    assert_clean_log(srv)


@pytest.fixture
def make_server(tmp_path):
    made = []

    def factory(**sections):
        import os
        d = tmp_path / f"s{len(made)}"
        os.makedirs(d, exist_ok=True)
        srv = Server(str(d), **sections)
        made.append(srv)
        return srv

    yield factory
    for srv in made:
        srv.stop()
    for srv in made:
        assert_clean_log(srv)
