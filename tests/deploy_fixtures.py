"""A real Airflow deployment for tests: ``airflow api-server``, ``scheduler``, ``dag-processor`` and
``triggerer`` as separate processes of the project's venv, on a throwaway ``AIRFLOW_HOME``.

Import the fixture into a test module::

    from tests.deploy_fixtures import airflow_deployment  # noqa: F401

What it runs, and why:

* the ``LocalExecutor`` on a PostgreSQL metadata database that the fixture starts on loopback
  (:class:`LoopbackPostgres`). Airflow 3.3 runs the ``LocalExecutor`` on sqlite too, but sqlite
  takes one writer at a time and ``airflow backfill create`` then fails now and then with
  "database is locked" (each backfill run is written in a savepoint that reads before it writes,
  and a commit of another component in between is refused at once, whatever the busy timeout;
  Airflow's REST API says so: "Backfill create is not supported on SQLite under concurrent
  access"). The test is skipped, saying so, where no PostgreSQL server binaries are installed;
* every component on loopback only: the api-server binds ``127.0.0.1`` on a free port, the
  scheduler and the triggerer run with ``--skip-serve-logs`` (their log servers bind every
  interface and have no bind setting), the scheduler's health-check server stays off. Workers
  reach the Task Execution API at ``http://127.0.0.1:<port>/execution/``. PostgreSQL listens on
  ``127.0.0.1`` only, without a Unix socket;
* ``[core] simple_auth_manager_all_admins`` (no login: every request is an admin's) and
  ``[core] test_connection = Enabled`` (the UI's and the REST API's connection test);
* one environment for all components, built from this process's without its ``AIRFLOW*``
  variables (the test session's own ``AIRFLOW_HOME``, connections and Variables) nor proxies
  (everything is on loopback); ``PYTHONPATH`` starts with this checkout, so the components import
  this provider, not another installed copy.

Each component runs in a process group of its own; :meth:`AirflowDeployment.stop` ends every
group (SIGTERM, then SIGKILL after a grace period), on every exit path of the fixture, and once
more at interpreter exit should the fixture's teardown not run.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from airflow_provider_activities.testing.services import free_port

T = TypeVar("T")

AIRFLOW = Path(sys.executable).with_name("airflow")
"""The ``airflow`` command of the venv running the tests."""
REPO = Path(__file__).resolve().parents[1]
STOP_GRACE_SECONDS = 30.0
"""How long a component may take to exit after SIGTERM before its process group is killed."""
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Component:
    """One started Airflow process (the leader of its process group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of its log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as err:
            return f"(no log: {err})"


def postgres_binaries() -> tuple[Path, Path] | None:
    """``initdb`` and ``postgres`` from ``PATH`` or the newest ``/usr/lib/postgresql/*/bin``; ``None`` if absent."""
    for directory in [None, *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        found = [shutil.which(name, path=directory) for name in ("initdb", "postgres")]
        if found[0] and found[1]:
            return Path(found[0]), Path(found[1])
    return None


class LoopbackPostgres:
    """A throwaway PostgreSQL server on ``127.0.0.1`` and a free port, no Unix socket, password
    authentication, durability off (``fsync``, ``synchronous_commit``) since its data is thrown
    away. Run as root (PostgreSQL refuses root), it runs as the ``postgres`` user, or ``nobody``.

    :param initdb: the ``initdb`` command.
    :param postgres: the ``postgres`` command.
    """

    def __init__(self, initdb: Path, postgres: Path) -> None:
        self.initdb = initdb
        self.postgres = postgres
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.base = Path(tempfile.mkdtemp(prefix="peopleai-postgres-"))  # not under pytest's root-only folder
        self.process: subprocess.Popen[bytes] | None = None
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = _account("postgres") or _account("nobody")
            assert account is not None, "no postgres or nobody user to run PostgreSQL as"
            self._user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            os.chown(self.base, account.pw_uid, account.pw_gid)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its ``airflow`` database."""
        return f"postgresql+psycopg2://airflow:{self.password}@127.0.0.1:{self.port}/airflow"

    def start(self, timeout: float = 60.0) -> LoopbackPostgres:
        """Initialise the cluster, start the server, create the ``airflow`` database."""
        import psycopg2

        secret = self.base / "password"
        secret.write_text(self.password)
        if self._user:
            os.chown(secret, self._user["user"], self._user["group"])
        atexit.register(self.stop)
        data = self.base / "data"
        init = subprocess.run(
            [str(self.initdb), "-D", str(data), "-U", "airflow", "--auth=scram-sha-256", f"--pwfile={secret}",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, timeout=120, **self._user,
        )
        assert init.returncode == 0, f"initdb failed:\n{init.stdout[-2000:]}{init.stderr[-2000:]}"
        with open(self.base / "postgres.log", "wb") as log:
            self.process = subprocess.Popen(
                [str(self.postgres), "-D", str(data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._user,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = psycopg2.connect(
                    host="127.0.0.1", port=self.port, user="airflow", password=self.password, dbname="postgres", connect_timeout=2
                )
                break
            except psycopg2.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"PostgreSQL did not start:\n{(self.base / 'postgres.log').read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE airflow")
        connection.close()
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after a grace period; remove its files. Idempotent."""
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)
        atexit.unregister(self.stop)


def _account(name: str) -> Any:
    import pwd  # Unix only (the fixture skips other systems before it gets here)

    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


class AirflowDeployment:
    """Airflow's components as separate processes on one throwaway home (see the module docstring).

    :param home: the ``AIRFLOW_HOME`` (created; it holds logs and ``dags``).
    :param dags: the dags folder.
    :param database_url: the metadata database's SQLAlchemy URL.
    :param environment: more environment variables for every component (e.g. a DAG's knobs).
    """

    def __init__(self, home: Path, dags: Path, database_url: str, environment: dict[str, str] | None = None) -> None:
        self.home = home
        self.dags = dags
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.components: list[Component] = []
        self.env = self._environment(environment or {})

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW") and key.lower() not in proxies}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                "NO_PROXY": "127.0.0.1,127.0.0.2,localhost",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            }
        )
        env.update(extra)
        return env

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, ready_timeout: float = 240.0) -> AirflowDeployment:
        """Migrate the database, start the four components and wait until the api-server reports
        the scheduler, the triggerer and the dag-processor healthy.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        migrate = self.cli("db", "migrate", timeout=300)
        assert migrate.returncode == 0, f"airflow db migrate failed:\n{migrate.stdout[-3000:]}"
        atexit.register(self.stop)
        self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1")
        self._spawn("scheduler", "scheduler", "--skip-serve-logs")
        self._spawn("dag-processor", "dag-processor")
        self._spawn("triggerer", "triggerer", "--skip-serve-logs")
        self.wait_for(self._healthy, ready_timeout, "the components to report healthy")
        return self

    def _spawn(self, name: str, *args: str) -> None:
        log = self.home / f"{name}.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [str(AIRFLOW), *args],
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own, to stop with its children
            )
        self.components.append(Component(name, process, log))

    def _healthy(self) -> bool:
        status, health = self.api("GET", "/api/v2/monitor/health", check=False)
        if status != 200:
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(part) or {}).get("status") == "healthy" for part in parts)

    def stop(self) -> None:
        """End every component's process group: SIGTERM, then SIGKILL for what is left after
        :data:`STOP_GRACE_SECONDS`. Idempotent.
        """
        groups = [component.process.pid for component in self.components]
        for group in groups:
            _signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for component in self.components:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        while _pids_in_groups(set(groups)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for group in groups:
            _signal_group(group, signal.SIGKILL)
        for component in self.components:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=10)
        atexit.unregister(self.stop)

    def alive(self) -> list[int]:
        """The processes of the components' process groups still running (zombies left out)."""
        return _pids_in_groups({component.process.pid for component in self.components})

    def check_running(self) -> None:
        """Fail, with its log, when a component has exited."""
        for component in self.components:
            if component.process.poll() is not None:
                pytest.fail(f"airflow {component.name} exited ({component.process.returncode}):\n{component.tail()}")

    # -- talking to it ---------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, *, check: bool = True, timeout: float = 60.0) -> tuple[int, Any]:
        """Call the api-server: ``(status, JSON answer)``; with ``check``, fail on a non-2xx status."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with _NO_PROXY.open(request, timeout=timeout) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if check:
                raise
            return 0, str(err)
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        if check and not 200 <= status < 300:
            pytest.fail(f"{method} {path} answered {status}: {payload}")
        return status, payload

    def cli(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` with the components' environment; stdout and stderr together."""
        return subprocess.run(
            [str(AIRFLOW), *args],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str, every: float = 1.0) -> T:
        """Call ``probe`` until it returns something truthy (returned); fail after ``timeout``
        seconds, or at once when a component exits, with the components' logs.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{self.diagnostics()}")
            time.sleep(every)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's task instances, by task id, as the REST API gives them."""
        quoted = urllib.parse.quote(run_id, safe="")
        _, answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")
        return {ti["task_id"]: ti for ti in answer["task_instances"]}

    def diagnostics(self) -> str:
        """The tail of every component's log, and of every task log that holds an error."""
        parts = [f"--- airflow {c.name} (exit {c.process.poll()}) ---\n{c.tail()}" for c in self.components]
        for log in sorted((self.home / "logs").rglob("*.log")) if (self.home / "logs").exists() else []:
            text = log.read_text(errors="replace")
            if '"level":"error"' in text or "ERROR" in text:
                parts.append(f"--- {log.relative_to(self.home)} ---\n" + "\n".join(text.splitlines()[-30:]))
        return "\n".join(parts)

    def listening_sockets(self) -> list[tuple[str, int, int]]:
        """``(address, port, pid)`` of every listening TCP socket held by a process of the
        components' process groups (read from ``/proc``, as ``ss -ltnp`` does).
        """
        groups = {component.process.pid for component in self.components}
        owners: dict[int, int] = {}
        for pid in _pids_in_groups(groups):
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        owners[int(target[8:-1])] = pid
            except OSError:  # the process ended meanwhile
                continue
        found = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], int(fields[9])
                if state == "0A" and inode in owners:  # 0A: LISTEN
                    address, port = local.split(":")
                    found.append((_proc_address(address), int(port, 16), owners[inode]))
        return found


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def _pids_in_groups(groups: set[int]) -> list[int]:
    """Every live (not zombie) process whose process group is one of ``groups``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) in groups and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _proc_address(hex_address: str) -> str:
    """An address of ``/proc/net/tcp{,6}`` (hexadecimal, 32-bit words in host byte order) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)) if sys.byteorder == "little" else raw
    return str(ipaddress.ip_address(words))


def assert_loopback_only(deployment: AirflowDeployment) -> list[tuple[str, int, int]]:
    """Every listening socket of the deployment is on a loopback address, the api-server's among
    them; the sockets found.
    """
    sockets = deployment.listening_sockets()
    assert ("127.0.0.1", deployment.port) in {(address, port) for address, port, _ in sockets}, sockets
    exposed = [entry for entry in sockets if not ipaddress.ip_address(entry[0]).is_loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"
    return sockets


@pytest.fixture(scope="module")
def airflow_deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDeployment]:
    """A started deployment for a test module; its DAG files and knobs come from the module's
    ``DEPLOYMENT_DAGS`` (paths of DAG files copied into the dags folder) and
    ``DEPLOYMENT_ENVIRONMENT`` (more environment variables). Stopped after the module.
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("the deployment test finds the components' listening sockets in /proc (Linux only)")
    if not AIRFLOW.exists():
        pytest.skip(f"no airflow command next to the running Python ({AIRFLOW})")
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, postgres) on PATH or in /usr/lib/postgresql/*/bin: the deployment "
            "test runs Airflow on PostgreSQL (on sqlite, `airflow backfill create` fails now and then with "
            "'database is locked'); install them, e.g. `apt-get install postgresql`"
        )
    home = tmp_path_factory.mktemp("airflow-deployment")
    dags = home / "dags"
    dags.mkdir()
    for source in getattr(request.module, "DEPLOYMENT_DAGS", ()):
        (dags / Path(source).name).write_bytes(Path(source).read_bytes())
    database = LoopbackPostgres(*binaries)
    deployment: AirflowDeployment | None = None
    try:
        database.start()
        deployment = AirflowDeployment(home, dags, database.url, dict(getattr(request.module, "DEPLOYMENT_ENVIRONMENT", {})))
        yield deployment.start()
    finally:
        if deployment is not None:
            deployment.stop()
        database.stop()
