"""ircish-client and accounts: logging in with SASL while connecting (SCRAM-SHA-256 where
offered, else PLAIN), NickServ where there is no SASL, /register and /login, the account on
the prompt, a failed login as one line, a reconnect that logs in again, and no password on
screen or in the log. Sessions run against a real server in the test process; the choices
that this server never makes (no SCRAM, a 908, no NickServ) are fed to a session by hand."""

from __future__ import annotations

import base64
import logging

import pytest
from click.testing import CliRunner
from helpers import ACCOUNT_PASSWORD, TIMEOUT, FakeLink, Recorder, add_account, wait_for

from ircish import caps, sasl
from ircish.client import cli
from ircish.client.input_line import CommandLine, holds_secret
from ircish.client.login import Credentials, SaslLogin, choose_mechanism
from ircish.client.session import (
    ConnectError,
    Note,
    Session,
    SessionConfig,
)
from ircish.protocol import Message, parse, redacted

PASSWORD = ACCOUNT_PASSWORD


def type_line(session: Session, recorder: Recorder, line: str) -> None:
    """`line` as if typed, then a round trip, so its answers are in."""
    CommandLine(session, recorder).handle(line)
    assert session.sync(TIMEOUT)


def everything_shown(recorder: Recorder) -> str:
    return "\n".join(recorder.rendered() + recorder.notes())


def failures(recorder: Recorder) -> list[str]:
    return [note for note in recorder.notes() if "failed" in note]


# -- logging in while connecting ------------------------------------------------------------


def test_scram_login_succeeds_and_the_account_shows(server, open_session, caplog):
    add_account(server, "alice")
    caplog.set_level(logging.DEBUG, logger="ircish.client")
    alice, recorder = open_session("alice", account="alice", account_password=PASSWORD)
    assert alice.view().account == "alice"
    assert "Logged in as alice" in recorder.notes()
    assert server.world.find_user("alice").account == "alice"
    sent = [record.getMessage() for record in caplog.records if record.msg.startswith(">>")]
    assert ">> AUTHENTICATE SCRAM-SHA-256" in sent
    assert sent.index(">> CAP END") > sent.index(">> AUTHENTICATE SCRAM-SHA-256")
    # Nothing about SASL's steps on screen, and the password nowhere, log included.
    assert not any("SASL" in line for line in recorder.rendered())
    assert PASSWORD not in everything_shown(recorder)
    assert PASSWORD not in caplog.text


def test_plain_is_used_where_scram_is_not_offered(server, open_session, monkeypatch, caplog):
    monkeypatch.setattr(sasl, "mechanisms", lambda external: (sasl.PLAIN,))
    add_account(server, "alice")
    caplog.set_level(logging.DEBUG, logger="ircish.client")
    alice, _ = open_session("alice", account="alice", account_password=PASSWORD)
    assert alice.view().account == "alice"
    assert ">> AUTHENTICATE PLAIN" in caplog.text
    assert ">> AUTHENTICATE ****" in caplog.text  # the payload: the password in base64
    secret = base64.b64encode(f"alice\0alice\0{PASSWORD}".encode()).decode()
    assert secret not in caplog.text and PASSWORD not in caplog.text


def test_a_wrong_password_is_one_line_and_the_session_goes_on(server, open_session, connect):
    add_account(server, "alice")
    alice, recorder = open_session("alice", account="alice", account_password="not it")
    # The why is the server's (ircish's SCRAM says "SCRAM: The client keys don't match.").
    [failure] = failures(recorder)
    assert failure.startswith("Login as alice failed: ")
    assert alice.view().account is None
    # Connected, not logged in: it talks like anyone.
    bob = connect("bob")
    assert alice.send(Message("PRIVMSG", ["bob", "still here"]))
    bob.expect(r"PRIVMSG bob :still here$")
    assert not any("SASL" in line for line in recorder.rendered())


def test_an_account_other_than_the_nick(server, open_session):
    add_account(server, "alice")
    carol, _ = open_session("carol", account="ALICE", account_password=PASSWORD)
    assert carol.view().account == "alice"  # as the server names it
    assert server.world.find_user("carol").account == "alice"


def test_without_sasl_the_client_logs_in_with_nickserv(server, open_session, monkeypatch):
    hidden = caps.not_offered
    monkeypatch.setattr(caps, "not_offered", lambda *args: hidden(*args) | {"sasl"})
    add_account(server, "alice")
    alice, recorder = open_session("alice", account="alice", account_password=PASSWORD)
    wait_for(lambda: alice.view().account == "alice")
    assert "Logged in as alice" in recorder.notes()
    assert failures(recorder) == []
    assert PASSWORD not in everything_shown(recorder)


def test_without_sasl_a_wrong_password_is_one_line(server, open_session, monkeypatch):
    hidden = caps.not_offered
    monkeypatch.setattr(caps, "not_offered", lambda *args: hidden(*args) | {"sasl"})
    add_account(server, "alice")
    alice, recorder = open_session("alice", account="alice", account_password="not it")
    assert alice.sync(TIMEOUT)
    assert failures(recorder) == ["Login as alice failed: Invalid account name or password"]
    assert alice.view().account is None


# -- /register and /login -------------------------------------------------------------------


def test_register_logs_in_and_a_reconnect_logs_in_again(server, open_session):
    dave, recorder = open_session("dave", reconnect=True)
    assert "draft/account-registration" in dave._server_caps
    type_line(dave, recorder, f"/register {PASSWORD.replace(' ', '-')}")
    wait_for(lambda: dave.view().account == "dave")
    assert "Logged in as dave" in recorder.notes()
    assert "Registered dave" in recorder.notes()
    assert server.world.accounts.get("dave") is not None
    # The link breaks: the reconnect logs in again, with SASL, before anything else.
    server.world.find_user("dave").conn.close("test", error="Closing link (test)")
    wait_for(lambda: recorder.notes().count("Logged in as dave") == 2, timeout=TIMEOUT + 3)
    assert dave.wait_registered(TIMEOUT)
    wait_for(lambda: dave.view().account == "dave")
    assert PASSWORD.replace(" ", "-") not in everything_shown(recorder)


def test_a_refused_registration_is_one_line(server, open_session):
    dave, recorder = open_session("dave")
    type_line(dave, recorder, "/register short")
    assert failures(recorder) == ["Registering dave failed: Passwords need at least 8 characters"]
    assert dave.view().account is None


def test_login_after_connecting_with_nickserv(server, open_session):
    add_account(server, "alice")
    carol, recorder = open_session("carol")
    type_line(carol, recorder, "/login alice not it")
    assert failures(recorder) == ["Login as alice failed: Invalid account name or password"]
    type_line(carol, recorder, f"/login alice {PASSWORD}")
    assert carol.sync(TIMEOUT)
    assert carol.view().account == "alice"
    assert "Logged in as alice" in recorder.notes()
    # Neither the lines to NickServ nor its answers are shown as such: one line each.
    assert not any("NickServ" in line for line in everything_shown(recorder).splitlines())
    assert PASSWORD not in everything_shown(recorder)
    assert "not it" not in everything_shown(recorder)


def test_a_line_to_nickserv_is_never_shown_as_said(server, open_session):
    add_account(server, "alice")
    alice, recorder = open_session("alice")
    type_line(alice, recorder, f"/msg NickServ IDENTIFY alice {PASSWORD}")
    wait_for(lambda: alice.view().account == "alice")
    assert PASSWORD not in everything_shown(recorder)
    type_line(alice, recorder, "/msg NickServ LOGOUT")
    wait_for(lambda: alice.view().account is None)
    assert "Logged out" in recorder.notes()


# -- the choices, fed by hand ---------------------------------------------------------------


class Fed:
    """A session registering on a fake link: lines go in through its own handler."""

    def __init__(self, password: str | None = PASSWORD) -> None:
        self.recorder = Recorder()
        config = SessionConfig(nick="carol", account_password=password)
        self.session = Session(config, self.recorder)
        self.link = FakeLink()
        self.session._link = self.link  # type: ignore[assignment]

    def feed(self, *lines: str) -> None:
        for line in lines:
            self.session._handle(self.link, parse(line))  # type: ignore[arg-type]

    def authenticate(self) -> list[str]:
        return [msg.param(0) for msg in self.link.sent if msg.command == "AUTHENTICATE"]


@pytest.mark.parametrize(
    ("offered", "tried", "chosen"),
    [
        ("PLAIN,SCRAM-SHA-256", (), sasl.SCRAM_SHA_256),
        ("PLAIN,SCRAM-SHA-256,EXTERNAL", (), sasl.SCRAM_SHA_256),
        ("PLAIN", (), sasl.PLAIN),
        ("plain,EXTERNAL", (), sasl.PLAIN),
        ("", (), sasl.SCRAM_SHA_256),  # none listed: try the best
        ("", (sasl.SCRAM_SHA_256,), sasl.PLAIN),
        ("EXTERNAL", (), None),
        ("PLAIN,SCRAM-SHA-256", (sasl.SCRAM_SHA_256, sasl.PLAIN), None),
    ],
)
def test_the_mechanism_chosen(offered, tried, chosen):
    assert choose_mechanism(offered, frozenset(tried)) == chosen


def test_plain_sends_the_account_twice_and_the_password():
    login = SaslLogin(Credentials("alice", "pw"), sasl.PLAIN)
    assert login.start() == ["PLAIN"]
    assert login.answer("+") == sasl.encode_response(b"alice\0alice\0pw")


def test_a_server_offering_only_plain_gets_plain():
    fed = Fed()
    fed.feed(":srv CAP * LS :sasl=PLAIN server-time")
    assert fed.link.last("CAP").params == ("REQ", "server-time sasl")
    fed.feed(":srv CAP * ACK :server-time sasl")
    assert fed.authenticate() == ["PLAIN"]
    fed.feed("AUTHENTICATE +")
    assert fed.authenticate()[1:] == sasl.encode_response(f"carol\0carol\0{PASSWORD}".encode())
    assert fed.link.last("CAP").params == ("REQ", "server-time sasl")  # no CAP END yet
    fed.feed(
        ":srv 900 * * carol :You are now logged in as carol",
        ":srv 903 * :SASL authentication successful",
    )
    assert fed.link.last("CAP").params == ("END",)
    assert fed.session.view().account == "carol"
    assert fed.recorder.notes() == ["Logged in as carol"]


def test_a_908_makes_the_client_try_a_mechanism_the_server_has():
    fed = Fed()
    fed.feed(":srv CAP * LS :sasl")  # a server that lists no mechanisms
    fed.feed(":srv CAP * ACK :sasl")
    assert fed.authenticate() == ["SCRAM-SHA-256"]
    fed.feed(
        ":srv 908 * PLAIN :are available SASL mechanisms",
        ":srv 904 * :SASL authentication failed",
    )
    assert fed.authenticate() == ["SCRAM-SHA-256", "PLAIN"]
    assert fed.recorder.notes() == []
    fed.feed(":srv 904 * :SASL authentication failed: Invalid account name or password")
    assert fed.link.last("CAP").params == ("END",)
    assert fed.recorder.notes() == ["Login as carol failed: Invalid account name or password"]


def test_a_server_that_offered_scram_cannot_talk_the_client_down_to_plain():
    fed = Fed()
    fed.feed(":srv CAP * LS :sasl=SCRAM-SHA-256,PLAIN", ":srv CAP * ACK :sasl")
    assert fed.authenticate() == ["SCRAM-SHA-256"]
    fed.feed(
        ":srv 908 * PLAIN :are available SASL mechanisms",
        ":srv 904 * :SASL authentication failed",
    )
    assert fed.authenticate() == ["SCRAM-SHA-256"]  # no PLAIN: the password never goes
    assert fed.link.last("CAP").params == ("END",)
    assert len(fed.recorder.notes()) == 1


def test_a_server_whose_scram_proof_fails_is_not_believed():
    fed = Fed()
    fed.feed(":srv CAP * LS :sasl=SCRAM-SHA-256", ":srv CAP * ACK :sasl", "AUTHENTICATE +")
    first = base64.b64decode(fed.authenticate()[-1]).decode()
    nonce = first.split("r=")[1]
    server_first = f"r={nonce}xyz,s={base64.b64encode(b'salt').decode()},i=4096"
    fed.feed(f"AUTHENTICATE {base64.b64encode(server_first.encode()).decode()}")
    forged = base64.b64encode(b"v=" + base64.b64encode(b"x" * 32)).decode()
    fed.feed(f"AUTHENTICATE {forged}")
    assert fed.authenticate()[-1] == "*"
    assert fed.link.last("CAP").params == ("END",)
    fed.feed(":srv 906 * :SASL authentication aborted")  # our abort's answer: not shown again
    [note] = fed.recorder.notes()
    assert note.startswith("Login as carol failed: the server's SCRAM answer does not hold")
    fed.feed(":srv 001 carol :Welcome")
    assert not [msg for msg in fed.link.sent if msg.command == "PRIVMSG"]  # no NickServ try


def test_a_failed_login_is_not_tried_again_on_reconnect():
    fed = Fed()
    fed.feed(":srv CAP * LS :sasl=PLAIN", ":srv CAP * ACK :sasl", "AUTHENTICATE +")
    fed.feed(":srv 904 * :SASL authentication failed: Invalid account name or password")
    fed.feed(":srv 001 carol :Welcome")
    fed.session._lose(fed.link)  # type: ignore[arg-type]
    fed.link = FakeLink()
    fed.feed(":srv CAP * LS :sasl=PLAIN")
    assert fed.link.last("CAP").params == ("END",)  # no sasl asked for
    assert len(fed.recorder.notes()) == 1


def test_a_server_with_no_accounts_says_so():
    fed = Fed()
    fed.feed(":srv CAP * LS :server-time", ":srv CAP * ACK :server-time", ":srv 001 carol :Hi")
    before, identify, after = fed.link.sent[-3:]
    assert identify == Message("PRIVMSG", ["NickServ", f"IDENTIFY carol {PASSWORD}"])
    fed.feed(
        f":srv PONG srv {before.param(0)}",
        ":srv 401 carol NickServ :No such nick",
        f":srv PONG srv {after.param(0)}",
    )
    assert fed.recorder.notes() == [
        "Login as carol failed: this server has no accounts (no SASL, no NickServ)"
    ]
    assert not fed.recorder.rendered()[1:]  # the 401 is in that line


def test_nickserv_notices_before_the_answer_are_shown_as_they_are():
    fed = Fed()
    fed.feed(":srv CAP * LS :server-time", ":srv CAP * ACK :server-time", ":srv 001 carol :Hi")
    before, _, after = fed.link.sent[-3:]
    fed.feed(
        ":NickServ!NickServ@services NOTICE carol :The nick carol belongs to an account",
        f":srv PONG srv {before.param(0)}",
        ":srv 900 carol carol!c@h carol :You are now logged in as carol",
        ":NickServ!NickServ@services NOTICE carol :You are now logged in as carol",
        f":srv PONG srv {after.param(0)}",
    )
    assert fed.recorder.rendered()[1:] == ["-NickServ- The nick carol belongs to an account"]
    assert fed.recorder.notes() == ["Logged in as carol"]


def test_register_goes_to_nickserv_where_register_is_not_offered():
    fed = Fed(password=None)
    fed.feed(":srv CAP * LS :server-time", ":srv CAP * ACK :server-time", ":srv 001 carol :Hi")
    assert fed.session.register("hunter22", "c@example.org") is None
    before, register, after = fed.link.sent[-3:]
    assert register == Message("PRIVMSG", ["NickServ", "REGISTER hunter22 c@example.org"])
    fed.feed(
        f":srv PONG srv {before.param(0)}",
        ":NickServ!NickServ@services NOTICE carol :That nick is already registered",
        f":srv PONG srv {after.param(0)}",
    )
    assert fed.recorder.notes() == ["Registering carol failed: That nick is already registered"]


def test_register_uses_register_where_offered():
    fed = Fed(password=None)
    fed.feed(
        ":srv CAP * LS :draft/account-registration=before-connect",
        ":srv 001 carol :Hi",
    )
    assert fed.session.register("hunter22", None) is None
    assert fed.link.sent[-1] == Message("REGISTER", ["*", "*", "hunter22"])
    fed.feed(
        ":srv 900 carol carol!c@h carol :You are now logged in as carol",
        ":srv REGISTER SUCCESS carol :Account carol registered",
    )
    assert fed.recorder.notes() == ["Logged in as carol", "Registered carol"]
    assert fed.session._credentials == Credentials("carol", "hunter22")


# -- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "shown"),
    [
        (Message("PASS", ["hunter2"]), "PASS ****"),
        (Message("OPER", ["root", "hunter2"]), "OPER root ****"),
        (Message("REGISTER", ["*", "*", "hunter2"]), "REGISTER * * ****"),
        (Message("AUTHENTICATE", ["Y2Fyb2wAY2Fyb2wAaHVudGVyMg=="]), "AUTHENTICATE ****"),
        (Message("AUTHENTICATE", ["PLAIN"]), None),
        (Message("AUTHENTICATE", ["+"]), None),
        (
            Message("PRIVMSG", ["nickserv", "IDENTIFY carol hunter2"]),
            "PRIVMSG nickserv :IDENTIFY ****",
        ),
        (Message("PRIVMSG", ["NickServ", "INFO"]), None),
        (Message("PRIVMSG", ["bob", "IDENTIFY hunter2"]), None),
        (Message("AUTHENTICATE", ["QUFB"]), "AUTHENTICATE ****"),  # capitals, but base64
        (Message("NS", ["IDENTIFY", "hunter2"]), "NS IDENTIFY ****"),
    ],
)
def test_the_debug_log_hides_passwords(msg, shown):
    assert redacted(msg) == shown


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("/login hunter2", True),
        ("/LOGIN carol hunter2", True),
        ("/register hunter2", True),
        ("/pass hunter2", True),
        ("/oper root hunter2", True),
        ("/msg NickServ IDENTIFY hunter2", True),
        ("/raw PASS hunter2", True),
        ("/msg bob hi", False),
        ("/loginfo", False),
        ("login is broken", False),
    ],
)
def test_lines_with_a_password_stay_out_of_the_input_history(line, secret):
    assert holds_secret(line) is secret


def test_credentials_never_show_their_password():
    assert "hunter2" not in repr(Credentials("carol", "hunter2"))
    config = SessionConfig(nick="carol", password="server-pw", account_password="hunter2")
    assert "hunter2" not in repr(config) and "server-pw" not in repr(config)


# -- the command line -------------------------------------------------------------------------


@pytest.fixture
def configs(monkeypatch) -> list[SessionConfig]:
    """The SessionConfigs ircish-client builds; no connection is made."""
    built: list[SessionConfig] = []

    class NoSession:
        def __init__(self, config: SessionConfig, listener: object) -> None:
            built.append(config)

        def start(self) -> None:
            raise ConnectError("not in this test")

    monkeypatch.setattr(cli, "Session", NoSession)
    return built


@pytest.mark.parametrize(
    ("args", "env", "account", "password", "server_password"),
    [
        (["--account", "alice", "--account-password", "pw"], {}, "alice", "pw", None),
        (["--account-password", "pw"], {}, "carol", "pw", None),
        ([], {"IRCISH_ACCOUNT": "alice", "IRCISH_ACCOUNT_PASSWORD": "pw"}, "alice", "pw", None),
        (["--password", "srv", "--account-password", "pw"], {}, "carol", "pw", "srv"),
        (["--password", "srv"], {}, None, None, "srv"),
    ],
)
def test_account_options(configs, args, env, account, password, server_password):
    result = CliRunner().invoke(cli.main, ["--nick", "carol", *args], env=env)
    assert result.exit_code == 1, result.output  # "cannot connect": the config was built
    [config] = configs
    assert (config.account, config.account_password) == (account, password)
    assert config.password == server_password


def test_an_account_without_a_password_and_no_terminal_is_a_usage_error(configs):
    result = CliRunner().invoke(cli.main, ["--nick", "carol", "--account", "alice"])
    assert result.exit_code == 2
    assert "--account needs the account's password" in result.output
    assert configs == []


def test_an_account_name_with_a_space_is_refused(configs):
    result = CliRunner().invoke(
        cli.main, ["--nick", "carol", "--account", "a b", "--account-password", "pw"]
    )
    assert result.exit_code == 2
    assert "is not an account name" in result.output


def test_notes_of_a_failed_login_are_errors():
    fed = Fed()
    fed.feed(":srv CAP * LS :sasl=PLAIN", ":srv CAP * ACK :sasl", "AUTHENTICATE +")
    fed.feed(":srv 904 * :SASL authentication failed: too many failed logins; wait 30 s")
    [event] = [event for event in fed.recorder.events if isinstance(event, Note)]
    assert event == Note("Login as carol failed: too many failed logins; wait 30 s", "error")
