"""The irctest controller for ircish: it writes a config into a temporary directory, starts
`python -m ircish.cli` on it as a subprocess, and tells irctest what the server does, so a
test of something ircish has declared fails instead of being skipped. Loaded by irctest's
conftest (`--controller ircish_controller`, with this directory on PYTHONPATH), inside
irctest's own venv: it imports only irctest and the standard library.

Environment:
  IRCISH_ROOT    the checkout to run (default: the parent of this directory); it goes on the
                 server's PYTHONPATH, so the tree is what runs, not an installed copy.
  IRCISH_PYTHON  the interpreter for the server (default: IRCISH_ROOT/.venv/bin/python if
                 there is one, else python3); it needs ircish's dependencies installed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from irctest import patma
from irctest.basecontrollers import BaseServerController, DirectoryBasedController
from irctest.cases import BaseServerTestCase
from irctest.runner import NotImplementedByController
from irctest.specifications import Capabilities, OptionalBehaviors

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The tests OPER as operuser/operpassword (kill.py, info.py, ...). The config holds only
# scrypt hashes, so this is `echo operpassword | ircish-server hash-password`, made once.
OPER_NAME = "operuser"
OPER_PASSWORD_HASH = (
    "scrypt$16384$8$1$6Hih6QSywKRCTa0Iq+wgwA==$AVONTIVxW73k97kgsUGYnYfktXI75oXySn7Goi+sBiM="
)


def ircish_root() -> Path:
    return Path(os.environ.get("IRCISH_ROOT") or PROJECT_ROOT).resolve()


def ircish_python(root: Path) -> str:
    if os.environ.get("IRCISH_PYTHON"):
        return os.environ["IRCISH_PYTHON"]
    venv_python = root / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else "python3"


class IrcishController(BaseServerController, DirectoryBasedController):
    software_name = "ircish"
    # EXTERNAL is offered only with tls.client_ca, which no test configures.
    supported_sasl_mechanisms = {"PLAIN", "SCRAM-SHA-256"}
    supports_sts = False
    _port_wait_interval = 0.02  # the interpreter starts in about 0.2 s
    # Before a synchronizing getMessage, irctest sleeps this long: what its controllers of
    # servers that handle clients in parallel set (sable 0.1 s, bahamut 1 s). Each client
    # has its own reader thread here, so "client 1 sends to 2, then 2 PINGs" can see 2's
    # PING answered before 1's line is relayed: websocket.py's testSubprotocolNegotiation
    # lost that race in 2 of about 15 full runs. A few milliseconds let the first line
    # through; the order of one client's own lines never needed it.
    sync_sleep_time = 0.005

    # Each one is here because its tests pass (a NAK of a listed cap is then a failure, not
    # a skip). cap-notify, invite-notify, userhost-in-names, sasl and
    # draft/account-registration have no Capabilities member; irctest finds them from CAP
    # LS. account-tag, account-notify and extended-join are confirmed by the services tests
    # (`conformance/run --accounts`).
    capabilities = frozenset(
        (
            Capabilities.ACCOUNT_NOTIFY,
            Capabilities.ACCOUNT_TAG,
            Capabilities.AWAY_NOTIFY,
            Capabilities.BATCH,
            Capabilities.ECHO_MESSAGE,
            Capabilities.EXTENDED_JOIN,
            Capabilities.EXTENDED_MONITOR,
            Capabilities.LABELED_RESPONSE,
            Capabilities.MESSAGE_TAGS,
            Capabilities.MULTI_PREFIX,
            Capabilities.SERVER_TIME,
            Capabilities.SETNAME,
        )
    )

    # Only what the server does and irctest confirms.
    # Not done, by choice: NO_CTCP (+C), NON_UTF8_MESSAGE (the server is UTF8ONLY),
    # INVITE_OVERRIDES_LIMIT (an invite lets one past +i only); not yet:
    # SASL_REAUTHENTICATION (AUTHENTICATE once logged in is 907).
    optional_behaviors = frozenset(
        (
            OptionalBehaviors.BAN_EXCEPTION_MODE,
            OptionalBehaviors.CAP_REQ_MINUS,
            OptionalBehaviors.ELIST_C,
            OptionalBehaviors.ELIST_M,
            OptionalBehaviors.ELIST_N,
            OptionalBehaviors.ELIST_T,
            OptionalBehaviors.ELIST_U,
            OptionalBehaviors.INVITE_EXCEPTION_MODE,
            OptionalBehaviors.INVITE_LIST,
            OptionalBehaviors.MULTI_JOIN,
            OptionalBehaviors.MULTI_KICK,
            OptionalBehaviors.MULTI_NAMES_COMMAND,
            OptionalBehaviors.MULTI_PRIVMSG,
            OptionalBehaviors.SASL_AFTER_REGISTRATION,
        )
    )

    # 005 tokens the server must keep sending (isupport.py's testValues checks them).
    isupport = {
        "BOT": "B",
        "CASEMAPPING": "ascii",
        "CHANMODES": "Ibe,k,l,Pimnst",
        "CHANTYPES": "#",
        "ELIST": "CMNTU",
        "EXCEPTS": "e",
        "INVEX": "I",
        "MONITOR": patma.StrRe("[0-9]+"),
        "PREFIX": "(ov)@+",
        "STATUSMSG": "@+",
        "TARGMAX": patma.ANYSTR,
        "UTF8ONLY": None,
        "WHOX": None,
    }

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: str | None,
        ssl: bool,
        run_services: bool,
        faketime: str | None,
        websocket_hostname: str | None,
        websocket_port: int | None,
    ) -> None:
        if websocket_hostname not in (None, hostname):
            # One host for every listener (server.host); irctest asks for the same one.
            raise NotImplementedByController("Websocket on another host")
        # Services tests (`run_services`: sasl.py, account_registration.py, chathistory.py
        # ...) run against the server alone: its accounts and NickServ are built in, so
        # there is nothing else to start, and registerUser registers with the server.
        assert self.proc is None
        self.hostname = hostname
        self.port = port
        self.create_config()
        assert self.directory is not None

        tls = None
        if ssl:
            # ircish always has its plain listener; the tests' port is the TLS one then,
            # and the plain one goes on a port nobody uses.
            self.gen_ssl()
            tls = {"port": port, "cert": str(self.pem_path), "key": str(self.key_path)}
            (_, port) = self.get_hostname_and_port()

        config = {
            "server": {
                "name": "My.Little.Server",  # what the tests expect in prefixes and replies
                "description": "test server",  # LINKS: irctest expects "0 test server"
                "network": "IrctestNet",
                "host": hostname,
                "port": port,
                "password": password,
                "motd": "irctest",
            },
            "limits": {
                # Every test client comes from 127.0.0.1, and the tests send in bursts:
                # no per-address cap, and no fakelag, as the other controllers configure.
                "max_clients_per_ip": 0,
                "flood_rate": 0,
                # registerUser sends the password in one REGISTER line, and sasl.py's
                # testPlainLarge800 registers one of 592 bytes: past 512. Services tests
                # only; none of them checks the line limit (the yardstick's do).
                "max_line_bytes": 1024 if run_services else 512,
            },
            "operators": [{"name": OPER_NAME, "password": OPER_PASSWORD_HASH, "hosts": ["*"]}],
            # History on, in memory (the default); no replay on join, which the tests of
            # joins do not expect (irctest's chathistory tests ask with CHATHISTORY).
            "history": {"replay_on_join": 0},
            "accounts": {
                "registration": "open",
                # irctest's TestCaseControllerConfig; off unless a test asks (the
                # "...Disallowed" tests check that it is off).
                "register_before_connect": self.test_config.account_registration_before_connect,
                "email_required": self.test_config.account_registration_requires_email,
                # The tests' passwords are short ("bar", "sesame").
                "min_password_length": 1,
                # sasl.py tries wrong passwords on purpose, several times per test.
                "failed_logins_per_minute": 1000,
            },
            "tls": tls,
            "log": {"level": "DEBUG" if self.debug_mode else "WARNING"},
            # The websocket tests' client sends no Origin, and the server's own origin and
            # a missing one are always let in: nothing to allow.
            "websocket": None if websocket_port is None else {"port": websocket_port},
        }
        # JSON is YAML, and needs no quoting rules of its own.
        config_path = self.directory / "ircish.yaml"
        config_path.write_text(json.dumps(config, indent=2))

        faketime_cmd: list[str] = []
        if faketime and shutil.which("faketime"):
            faketime_cmd = ["faketime", "-f", faketime]
            self.faketime_enabled = True

        root = ircish_root()
        env = dict(os.environ, PYTHONPATH=str(root), PYTHONUNBUFFERED="1")
        # A server starts for every test: compiling ircish and its libraries each time
        # (conformance/run keeps bytecode out of the irctest tree) would double setUp.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # execute() starts it in its own session; kill() signals that process group, so
        # no server outlives its test, and DirectoryBasedController.kill() removes the dir.
        self.proc = self.execute(
            [*faketime_cmd, ircish_python(root), "-m", "ircish.cli", "-c", config_path],
            proc_name="ircish",
            cwd=self.directory,
            env=env,
        )
        # Here rather than only at the first client: a server that cannot start (a config
        # it refuses) then fails the test's setUp with its exit status. (On the TLS port the
        # plain-text probe still works: the server answers it with an ERROR line.)
        self.wait_for_port()

    def wait_for_services(self) -> None:
        """No services to wait for (the server is up once its port is: run() waits)."""

    def registerUser(
        self, case: BaseServerTestCase, username: str, password: str | None = None
    ) -> None:
        """Make the account `username`: a client of its own takes that nick, registers with
        REGISTER (draft/account-registration; with an email, which email_required may ask
        for), waits for REGISTER SUCCESS, and quits, so the account exists on return."""
        if not case.run_services:
            # As irctest's other controllers: only services tests register accounts.
            raise ValueError("Attempted to register a nick, but `run_services` is not True.")
        assert password
        client = case.addClient(show_io=False)
        case.sendLine(client, f"NICK {username}")
        case.sendLine(client, "USER r e g :user")
        while case.getRegistrationMessage(client).command != "001":
            pass
        case.getMessages(client)
        case.sendLine(client, f"REGISTER * {username}@example.org :{password}")
        replies = case.getMessages(client)
        assert any(
            msg.command == "REGISTER" and msg.params[:2] == ["SUCCESS", username] for msg in replies
        ), f"registering the account {username} failed: {replies}"
        case.sendLine(client, "QUIT")
        case.assertDisconnected(client)


def get_irctest_controller_class() -> type[IrcishController]:
    return IrcishController
