import os
import shutil

import pytest

from harness import Postgres, Server

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg():
    """The PostgreSQL instance shared by the tests that do not stop it."""
    if shutil.which("runuser") is None:
        pytest.fail("runuser (util-linux) is needed to run PostgreSQL")
    instance = Postgres()
    instance.start()
    yield instance
    instance.destroy()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def make_server(backend, tmp_path, request):
    """Builds servers on the test's back end; every one is stopped at teardown."""
    servers = []

    def make(*extra_args, domain="example.test", accounts=("alice@example.test",), start=True,
             pg_instance=None, data_dir=None, share_store_of=None):
        pg_used = None
        if backend == "postgres":
            pg_used = pg_instance or request.getfixturevalue("pg")
        workdir = tmp_path / f"server{len(servers)}"
        workdir.mkdir()
        server = Server(backend, workdir, pg=pg_used, extra_args=extra_args, data_dir=data_dir,
                        share_store_of=share_store_of)
        servers.append(server)
        if domain:
            server.add_domain(domain)
        for account in accounts:
            server.add_account(account)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.kill9()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for server in servers:
            print(f"----- log of server on {server.smtp_port} -----\n{server.log_text()[-20000:]}")


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


def pytest_configure(config):
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
