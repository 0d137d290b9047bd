"""Rendering: the exact human line for each message a person sees, None for the rest."""

from __future__ import annotations

import re

import pytest

from ircish.protocol import Message, parse
from ircish.render import render, strip_formatting

ME = "carol"
BOB = ":bob!b@host"
ALICE = ":alice!a@host"
SRV = ":irc.example"
NOON = "1795255200"  # 2026-11-21 10:00 UTC


@pytest.mark.parametrize(
    ("line", "me", "expected"),
    [
        # PRIVMSG
        (f"{BOB} PRIVMSG #general :hi", ME, "[#general] <bob> hi"),
        (f"{BOB} PRIVMSG #general :\x01ACTION waves\x01", ME, "[#general] * bob waves"),
        (f"{BOB} PRIVMSG #general :\x01ACTION waves", ME, "[#general] * bob waves"),
        (f"{BOB} PRIVMSG carol :hi  there", ME, "[private] <bob> hi  there"),
        (f"{BOB} PRIVMSG CAROL :hi", ME, "[private] <bob> hi"),
        (f"{BOB} PRIVMSG carol :\x01ACTION waves\x01", ME, "[private] * bob waves"),
        (":carol!c@host PRIVMSG bob :hi", ME, "-> *bob* hi"),
        (":Carol!c@host PRIVMSG bob :hi", ME, "-> *bob* hi"),
        (":carol!c@host PRIVMSG bob :\x01ACTION waves\x01", ME, "-> *bob* * carol waves"),
        (":carol!c@host PRIVMSG #general :hi", ME, "[#general] <carol> hi"),
        (":carol!c@host PRIVMSG carol :note to self", ME, "[private] <carol> note to self"),
        (f"{BOB} PRIVMSG carol :\x01VERSION\x01", ME, "* bob sent a CTCP VERSION"),
        (f"{BOB} PRIVMSG #general :\x01ping 123\x01", ME, "* bob sent a CTCP PING"),
        (f"{BOB} PRIVMSG carol :hi", None, "[private] <bob> hi"),
        # NOTICE
        (f"{BOB} NOTICE carol :text", ME, "-bob- text"),
        (f"{BOB} NOTICE #general :text", ME, "[#general] -bob- text"),
        (f"{SRV} NOTICE carol :server text", ME, "-irc.example- server text"),
        (
            f"{SRV} NOTICE * :*** Looking up your hostname",
            None,
            "-irc.example- *** Looking up your hostname",
        ),
        (":carol!c@host NOTICE bob :psst", ME, "-> -bob- psst"),
        (f"{BOB} NOTICE carol :\x01VERSION ircish 0.1\x01", ME, "* bob sent a CTCP VERSION"),
        # JOIN / PART / QUIT
        (f"{BOB} JOIN #general", ME, "* bob joined #general"),
        (":carol!c@host JOIN #general", ME, "* You joined #general"),
        (":CAROL!c@host JOIN #general", ME, "* You joined #general"),
        (":carol!c@host JOIN #general", None, "* carol joined #general"),
        (f"{BOB} PART #general", ME, "* bob left #general"),
        (f"{BOB} PART #general :off to bed", ME, "* bob left #general (off to bed)"),
        (":carol!c@host PART #general", ME, "* You left #general"),
        (":carol!c@host PART #general :bye", ME, "* You left #general (bye)"),
        (f"{BOB} QUIT", ME, "* bob quit"),
        (f"{BOB} QUIT :Ping timeout", ME, "* bob quit (Ping timeout)"),
        # NICK
        (f"{BOB} NICK robert", ME, "* bob is now known as robert"),
        (":carol!c@host NICK caroline", ME, "* You are now known as caroline"),
        # TOPIC
        (
            f"{BOB} TOPIC #general :new  topic",
            ME,
            "* bob changed the topic of #general to: new  topic",
        ),
        (f"{BOB} TOPIC #general :", ME, "* bob cleared the topic of #general"),
        (f"{BOB} TOPIC #general", ME, "* bob cleared the topic of #general"),
        # KICK / MODE / INVITE / ERROR
        (f"{ALICE} KICK #r bob :be nice", ME, "* alice kicked bob from #r (be nice)"),
        (f"{ALICE} KICK #r bob", ME, "* alice kicked bob from #r"),
        (f"{ALICE} MODE #r +o bob", ME, "* alice sets mode +o bob on #r"),
        (f"{ALICE} MODE #r +nt", ME, "* alice sets mode +nt on #r"),
        (":carol MODE carol :+i", ME, "* Your modes: +i"),
        (f"{SRV} MODE Carol +iw", ME, "* Your modes: +iw"),
        (f"{SRV} MODE bob +i", ME, "* irc.example sets mode +i on bob"),
        (f"{ALICE} INVITE carol #r", ME, "* alice invites you to #r"),
        (f"{ALICE} INVITE bob #r", ME, "* alice invites bob to #r"),
        ("ERROR :Closing link: (Quit: bye)", ME, "! Closing link: (Quit: bye)"),
        # IRCv3 standard replies
        (f"{SRV} FAIL JOIN CHANNEL_FULL #r :Room is full", ME, "! Room is full"),
        (f"{SRV} WARN REHASH CERTS_EXPIRED :Certificate expired", ME, "! Certificate expired"),
        (f"{SRV} NOTE * OPER_MESSAGE :hello", ME, "! hello"),
        # unknown commands: source nick then a raw-ish form
        (f"{BOB} WALLOPS :hello there", ME, "bob WALLOPS hello there"),
        ("FROB a b", ME, "FROB a b"),
    ],
)
def test_render_commands(line: str, me: str | None, expected: str) -> None:
    assert render(parse(line), me) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # plain text numerics: the trailing text
        (f"{SRV} 001 carol :Welcome to ircish, carol", "Welcome to ircish, carol"),
        (f"{SRV} 002 carol :Your host is irc.example", "Your host is irc.example"),
        (f"{SRV} 003 carol :This server was created today", "This server was created today"),
        (f"{SRV} 251 carol :There are 3 users on 1 server", "There are 3 users on 1 server"),
        (f"{SRV} 255 carol :I have 3 clients", "I have 3 clients"),
        (f"{SRV} 265 carol 2 2 :Current local users: 2, Max: 2", "Current local users: 2, Max: 2"),
        (
            f"{SRV} 266 carol 2 2 :Current global users: 2, Max: 2",
            "Current global users: 2, Max: 2",
        ),
        (f"{SRV} 422 carol :MOTD File is missing", "MOTD File is missing"),
        (
            f"{SRV} 305 carol :You are no longer marked as being away",
            "You are no longer marked as being away",
        ),
        (
            f"{SRV} 306 carol :You have been marked as being away",
            "You have been marked as being away",
        ),
        (
            f"{SRV} 375 carol :- irc.example Message of the day -",
            "- irc.example Message of the day -",
        ),
        (f"{SRV} 372 carol :- Be  nice", "Be  nice"),
        (f"{SRV} 372 carol :-", ""),
        (f"{SRV} 372 carol :no dash", "no dash"),
        (f"{SRV} 376 carol :End of /MOTD command.", "End of /MOTD command."),
        # counted LUSERS lines
        (f"{SRV} 252 carol 2 :operator(s) online", "2 operator(s) online"),
        (f"{SRV} 253 carol 1 :unknown connection(s)", "1 unknown connection(s)"),
        (f"{SRV} 254 carol 2 :rooms formed", "2 rooms formed"),
        # modes
        (f"{SRV} 221 carol +i", "Your modes: +i"),
        (f"{SRV} 324 carol #r +ntl 10", "Modes of #r: +ntl 10"),
        # topic
        (f"{SRV} 331 carol #r :No topic is set", "No topic is set for #r"),
        (f"{SRV} 332 carol #r :Be  nice", "Topic for #r: Be  nice"),
        (f"{SRV} 333 carol #r bob!b@host {NOON}", "Topic set by bob on 2026-11-21 10:00"),
        (f"{SRV} 333 carol #r alice {NOON}", "Topic set by alice on 2026-11-21 10:00"),
        # names
        (f"{SRV} 353 carol = #r :alice @bob carol", "Users in #r: alice @bob carol"),
        (f"{SRV} 353 carol #r :alice bob", "Users in #r: alice bob"),
        # list
        (f"{SRV} 321 carol Channel :Users  Name", "Rooms:"),
        (f"{SRV} 322 carol #r 3 :Be nice", "  #r  3 users  Be nice"),
        (f"{SRV} 322 carol #r 1 :Be nice", "  #r  1 user  Be nice"),
        (f"{SRV} 322 carol #quiet 0 :", "  #quiet  0 users"),
        # who
        (
            f"{SRV} 352 carol #r bob host.example irc.example bob H :0 Bob Smith",
            "  #r  bob  bob@host.example  Bob Smith",
        ),
        (f"{SRV} 352 carol #r b h irc.example bob G@ :0 Bob", "  #r  bob  b@h  Bob (away)"),
        (f"{SRV} 352 carol #r b h irc.example bob H :0", "  #r  bob  b@h"),
        # whois
        (f"{SRV} 311 carol bob b host * :Bob Smith", "bob is bob!b@host (Bob Smith)"),
        (f"{SRV} 319 carol bob :#a @#b ", "bob is in: #a @#b"),
        (
            f"{SRV} 312 carol bob irc.example :The ircish server",
            "bob is on irc.example (The ircish server)",
        ),
        (
            f"{SRV} 317 carol bob 303 {NOON} :seconds idle, signon time",
            "bob has been idle 5m 3s, signed on 2026-11-21 10:00",
        ),
        (f"{SRV} 317 carol bob 7 :seconds idle", "bob has been idle 7s"),
        (
            f"{SRV} 317 carol bob 90061 {NOON} :x",
            "bob has been idle 1d 1h 1m 1s, signed on 2026-11-21 10:00",
        ),
        (
            f"{SRV} 317 carol bob 3600 {NOON} :x",
            "bob has been idle 1h 0m 0s, signed on 2026-11-21 10:00",
        ),
        (f"{SRV} 301 carol bob :gone  fishing", "bob is away: gone  fishing"),
        (f"{SRV} 313 carol bob :is an IRC operator", "bob is a server operator"),
        # help
        (f"{SRV} 704 carol join :/join <#room>", "/join <#room>"),
        (f"{SRV} 705 carol join :Join rooms.", "Join rooms."),
        # errors: trailing, then the middle params after the recipient
        (f"{SRV} 401 carol dave :No such nick", "! No such nick: dave"),
        (f"{SRV} 421 carol FOO :Unknown command", "! Unknown command: FOO"),
        (f"{SRV} 451 * :You have not registered", "! You have not registered"),
        (f"{SRV} 461 carol PRIVMSG :Not enough parameters", "! Not enough parameters: PRIVMSG"),
        (
            f"{SRV} 441 carol bob #r :They aren't on that channel",
            "! They aren't on that channel: bob #r",
        ),
        (f"{SRV} 501 carol :Unknown MODE flag", "! Unknown MODE flag"),
        (f"{SRV} 433 *", "! error 433"),
        # unknown numerics: the params after the recipient
        (f"{SRV} 042 carol ABC123 :your unique ID", "ABC123 your unique ID"),
        (f"{SRV} 368 carol #r :End of channel ban list", "#r End of channel ban list"),
    ],
)
def test_render_numerics(line: str, expected: str) -> None:
    assert render(parse(line), ME) == expected


@pytest.mark.parametrize(
    "line",
    [
        f"{SRV} PING :token",
        "PING :token",
        f"{SRV} PONG irc.example :token",
        f"{SRV} CAP * LS :multi-prefix",
        f"{SRV} 004 carol irc.example ircish-0.1 io nt",
        f"{SRV} 005 carol CHANTYPES=# :are supported by this server",
        f"{SRV} 366 carol #r :End of /NAMES list",
        f"{SRV} 315 carol #r :End of /WHO list",
        f"{SRV} 318 carol bob :End of /WHOIS list",
        f"{SRV} 323 carol :End of /LIST",
        f"{SRV} 329 carol #r {NOON}",
        f"{SRV} 706 carol join :End of /HELP",
        f"{SRV} 369 carol nobody :End of WHOWAS",
        f"{SRV} 999 carol",
    ],
)
def test_render_hides_protocol_chatter(line: str) -> None:
    assert render(parse(line), ME) is None


@pytest.mark.parametrize(
    ("msg", "me", "expected"),
    [
        # formatting and control characters never reach the screen, in text or in names
        (
            Message("PRIVMSG", ["#r", "\x02bold\x02 \x0304,12red\x03 \x1ditalic\x1d\x0f"], "bob"),
            ME,
            "[#r] <bob> bold red italic",
        ),
        (Message("PRIVMSG", ["#r", "a\x1b[2Jb\x9b31mc\x7f"], "bob"), ME, "[#r] <bob> a[2Jb31mc"),
        (Message("PRIVMSG", ["#r", "\x01ACTION \x02waves\x02\x01"], "bob"), ME, "[#r] * bob waves"),
        (Message("JOIN", ["#r\x03"], "b\x02ob\x1f!u@h"), ME, "* bob joined #r"),
        (Message("PRIVMSG", ["#r", "line\r\nQUIT\x00"], "bob"), ME, "[#r] <bob> lineQUIT"),
        # lower-case commands (Messages built by hand) render the same
        (Message("privmsg", ["#r", "hi"], "bob!u@h"), ME, "[#r] <bob> hi"),
        # nick comparison is ASCII-only case-insensitive
        (Message("JOIN", ["#r"], "\u00c9!u@h"), "\u00e9", "* \u00c9 joined #r"),
        (Message("JOIN", ["#r"], "\u00e9!u@h"), "\u00e9", "* You joined #r"),
        # odd or missing parameters: best effort, no exception
        (Message("PRIVMSG", [], "bob!u@h"), ME, "[private] <bob> "),
        (Message("NOTICE", ["carol", "hi"]), ME, "-*- hi"),
        (Message("FAIL"), ME, "! "),
        (Message("317", ["carol", "bob", "soon", "later"]), ME, "bob has been idle soon"),
        (Message("333", ["carol", "#r", "bob", "yesterday"]), ME, "Topic set by bob on yesterday"),
        (Message("333", ["carol", "#r", "bob", "9" * 30]), ME, f"Topic set by bob on {'9' * 30}"),
    ],
)
def test_render_edge_cases(msg: Message, me: str | None, expected: str) -> None:
    assert render(msg, me) == expected


_ODD_PARAMS = ["", "\x01", "\x01ACTION", "\x03", "#", "*", "carol", "-1", "9" * 40, "a b", "é"]
_COMMANDS = [
    "PRIVMSG", "NOTICE", "JOIN", "PART", "QUIT", "NICK", "TOPIC", "KICK", "MODE", "INVITE",
    "ERROR", "FAIL", "WARN", "NOTE", "PING", "CAP", "FROB",
    "001", "221", "252", "301", "311", "312", "313", "317", "319", "322", "324", "331", "332",
    "333", "352", "353", "372", "401", "451", "704", "999",
]  # fmt: skip
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@pytest.mark.parametrize("command", _COMMANDS)
@pytest.mark.parametrize("prefix", [None, "carol!c@h", "irc.example", "\x03"])
def test_render_never_raises_and_never_emits_control_chars(
    command: str, prefix: str | None
) -> None:
    for count in range(9):
        for odd in _ODD_PARAMS:
            msg = Message(command, [odd] * count, prefix)
            out = render(msg, "carol")
            assert out is None or not _UNSAFE.search(out), (msg, out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("\x02bold\x02", "bold"),
        ("\x1ditalic\x1d \x1funder\x1f \x1estrike\x1e \x11mono\x11", "italic under strike mono"),
        ("\x16reverse\x0f", "reverse"),
        ("\x034red", "red"),
        ("\x0304red", "red"),
        ("\x0304,12on blue", "on blue"),
        ("\x03,12comma stays", ",12comma stays"),
        ("\x034,text", ",text"),
        ("\x03123", "3"),
        ("\x03off", "off"),
        ("\x04ff0000hex", "hex"),
        ("\x04ff0000,00ff00hex", "hex"),
        ("bell\x07 tab\t esc\x1b nul\x00 cr\r lf\n", "bell tab esc nul cr lf"),
        ("\x01ACTION x\x01", "ACTION x"),
        ("c1\x85\x9b del\x7f", "c1 del"),
        ("ünïcode ☃ 9", "ünïcode ☃ 9"),
    ],
)
def test_strip_formatting(text: str, expected: str) -> None:
    assert strip_formatting(text) == expected
