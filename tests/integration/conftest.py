"""Pytest fixtures: a running wsproxy per test (or per module) from tests/integration/wsp.py."""
import pytest

from wsp import Server


@pytest.fixture
def server(tmp_path):
    srv = Server(str(tmp_path)).start()
    yield srv
    srv.stop()


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
