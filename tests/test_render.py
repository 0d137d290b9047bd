"""Rendering: the exact human line for each message a person sees, None for the rest."""

from __future__ import annotations

import re

import pytest

from ircish import modes
from ircish.protocol import Message, parse
from ircish.render import _ROOM_MODE_WORDS, _USER_MODE_WORDS, render, strip_formatting

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
        # A CTCP reply is shown as one, not as a request (found by a hostile try).
        (
            f"{BOB} NOTICE carol :\x01VERSION ircish 0.1\x01",
            ME,
            "* CTCP VERSION reply from bob: ircish 0.1",
        ),
        (f"{BOB} NOTICE carol :\x01PING\x01", ME, "* CTCP PING reply from bob"),
        (":carol!c@host NOTICE bob :\x01TIME now\x01", ME, "* You answered bob's CTCP TIME"),
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
        # KICK / KILL / INVITE / ERROR (MODE has its own table below)
        (f"{ALICE} KICK #r bob :be nice", ME, "* alice kicked bob from #r (be nice)"),
        (f"{ALICE} KICK #r bob", ME, "* alice kicked bob from #r"),
        (f"{ALICE} KICK #r carol :be nice", ME, "* You were kicked from #r by alice (be nice)"),
        (f"{ALICE} KICK #r Carol", ME, "* You were kicked from #r by alice"),
        (":carol!c@host KICK #r bob :bye", ME, "* You kicked bob from #r (bye)"),
        (f"{ALICE} KICK #r carol :bye", None, "* alice kicked carol from #r (bye)"),
        (f"{ALICE} KILL carol :spamming", ME, "* You were killed by alice (spamming)"),
        (f"{ALICE} KILL bob", ME, "* alice killed bob"),
        (f"{ALICE} INVITE carol #r", ME, "* alice invites you to #r (/join #r)"),
        (f"{ALICE} INVITE bob #r", ME, "* alice invites bob to #r"),
        ("ERROR :Closing link: (Quit: bye)", ME, "! Closing link: (Quit: bye)"),
        # IRCv3 standard replies
        (f"{SRV} FAIL JOIN CHANNEL_FULL #r :Room is full", ME, "! Room is full"),
        (f"{SRV} WARN REHASH CERTS_EXPIRED :Certificate expired", ME, "! Certificate expired"),
        (f"{SRV} NOTE * OPER_MESSAGE :hello", ME, "* hello"),
        (f"{BOB} WALLOPS :hello there", ME, "[wallops] <bob> hello there"),
        # unknown commands: source nick then a raw-ish form
        ("FROB a b", ME, "FROB a b"),
    ],
)
def test_render_commands(line: str, me: str | None, expected: str) -> None:
    assert render(parse(line), me) == expected


@pytest.mark.parametrize(
    ("line", "me", "expected"),
    [
        # member status: a change per nick, "you" when it is me
        (f"{ALICE} MODE #r +o bob", ME, "* alice gives operator to bob in #r"),
        (f"{ALICE} MODE #r -o bob", ME, "* alice removes operator from bob in #r"),
        (f"{ALICE} MODE #r +v bob", ME, "* alice gives voice to bob in #r"),
        (f"{ALICE} MODE #r -v bob", ME, "* alice removes voice from bob in #r"),
        (f"{ALICE} MODE #r +o carol", ME, "* alice gives operator to you in #r"),
        (f"{ALICE} MODE #r +o Carol", ME, "* alice gives operator to you in #r"),
        (
            f"{ALICE} MODE #r +ov bob carol",
            "dave",
            "* alice gives operator to bob and voice to carol in #r",
        ),
        (f"{ALICE} MODE #r +oo bob carol", ME, "* alice gives operator to bob and you in #r"),
        (
            f"{ALICE} MODE #r +ooov a b c d",
            ME,
            "* alice gives operator to a, b and c, and voice to d in #r",
        ),
        (
            f"{ALICE} MODE #r +o-o bob dave",
            ME,
            "* alice gives operator to bob and removes operator from dave in #r",
        ),
        # bans
        (f"{ALICE} MODE #r +b x!*@*", ME, "* alice bans x!*@* in #r"),
        (f"{ALICE} MODE #r -b x!*@*", ME, "* alice unbans x!*@* in #r"),
        (f"{ALICE} MODE #r +bb a!*@* b!*@*", ME, "* alice bans a!*@* and b!*@* in #r"),
        (f"{ALICE} MODE #r +e x!*@*", ME, "* alice exempts x!*@* from bans in #r"),
        (f"{ALICE} MODE #r -e x!*@*", ME, "* alice removes the ban exception for x!*@* in #r"),
        (
            f"{ALICE} MODE #r +I x!*@*",
            ME,
            "* alice lets x!*@* into #r without an invite",
        ),
        (
            f"{ALICE} MODE #r -I x!*@*",
            ME,
            "* alice removes the invite exception for x!*@* in #r",
        ),
        (
            f"{ALICE} MODE #r +ov-b bob dave x!*@*",
            ME,
            "* alice gives operator to bob and voice to dave, and unbans x!*@* in #r",
        ),
        # settings name the room once, then say "the room"
        (f"{ALICE} MODE #r +k hunter2", ME, "* alice sets the key of #r to hunter2"),
        (f"{ALICE} MODE #r -k *", ME, "* alice removes the key from #r"),
        (f"{ALICE} MODE #r -k", ME, "* alice removes the key from #r"),
        (f"{ALICE} MODE #r +l 10", ME, "* alice limits #r to 10 people"),
        (f"{ALICE} MODE #r +l 1", ME, "* alice limits #r to 1 person"),
        (f"{ALICE} MODE #r -l", ME, "* alice removes the user limit from #r"),
        (f"{ALICE} MODE #r +i", ME, "* alice makes #r invite-only"),
        (f"{ALICE} MODE #r -i", ME, "* alice removes invite-only from #r"),
        (f"{ALICE} MODE #r +m", ME, "* alice moderates #r"),
        (f"{ALICE} MODE #r -m", ME, "* alice stops moderating #r"),
        (f"{ALICE} MODE #r +s", ME, "* alice makes #r secret"),
        (f"{ALICE} MODE #r -s", ME, "* alice makes #r public"),
        (f"{ALICE} MODE #r +t", ME, "* alice lets only operators set the topic of #r"),
        (f"{ALICE} MODE #r -t", ME, "* alice lets anyone set the topic of #r"),
        (f"{ALICE} MODE #r +n", ME, "* alice blocks messages from outside #r"),
        (f"{ALICE} MODE #r -n", ME, "* alice allows messages from outside #r"),
        (
            f"{ALICE} MODE #r +mi",
            ME,
            "* alice moderates #r and makes the room invite-only",
        ),
        (
            f"{ALICE} MODE #r +kl secret 10",
            ME,
            "* alice sets the key of #r to secret and limits the room to 10 people",
        ),
        (
            f"{ALICE} MODE #r +o-m bob",
            ME,
            "* alice gives operator to bob and stops moderating #r",
        ),
        (
            f"{ALICE} MODE #r +is",
            ME,
            "* alice makes #r invite-only and the room secret",
        ),
        # my own changes: "You" with the plain verb
        (":carol!c@host MODE #r +o bob", ME, "* You give operator to bob in #r"),
        (":carol!c@host MODE #r +m", ME, "* You moderate #r"),
        # a status given to oneself (issue 11: not "You give operator to you")
        (":carol!c@host MODE #r +o carol", ME, "* You give yourself operator in #r"),
        (":carol!c@host MODE #r +v Carol", ME, "* You give yourself voice in #r"),
        (":carol!c@host MODE #r -o carol", ME, "* You remove operator from yourself in #r"),
        (f"{ALICE} MODE #r +o alice", ME, "* alice gives themself operator in #r"),
        (f"{ALICE} MODE #r -v alice", ME, "* alice removes voice from themself in #r"),
        (f"{ALICE} MODE #r +oo alice bob", ME, "* alice gives operator to themself and bob in #r"),
        (f"{ALICE} MODE #r +o themself", ME, "* alice gives operator to themself in #r"),
        (":carol!c@host MODE #r +q bob", ME, "* You set mode +q bob on #r"),
        (f"{SRV} MODE #r +o bob", ME, "* irc.example gives operator to bob in #r"),
        # what cannot be put in words is shown as the server wrote it
        (f"{ALICE} MODE #r +q bob", ME, "* alice sets mode +q bob on #r"),
        (f"{ALICE} MODE #r +qo bob dave", ME, "* alice sets mode +qo bob dave on #r"),
        (f"{ALICE} MODE #r +o", ME, "* alice sets mode +o on #r"),
        (f"{ALICE} MODE #r +o bob dave", ME, "* alice sets mode +o bob dave on #r"),
        (f"{ALICE} MODE #r +b", ME, "* alice sets mode +b on #r"),
        (f"{ALICE} MODE #r", ME, "* alice sets mode on #r"),
        # a nick or room holding a placeholder is not filled in again
        (f"{ALICE} MODE #{{arg}} +o {{room}}", ME, "* alice gives operator to {room} in #{arg}"),
        # user modes: mine in words, others' as written
        (":carol MODE carol +o", ME, "* You are now a server operator"),
        (":carol MODE carol -o", ME, "* You are no longer a server operator"),
        (":carol MODE carol :+i", ME, "* You are now invisible"),
        (":carol MODE carol +w", ME, "* You are now receiving WALLOPS"),
        (":carol MODE carol -i", ME, "* You are no longer invisible"),
        (":carol MODE carol +i-o", ME, "* You are now invisible and no longer a server operator"),
        (f"{SRV} MODE Carol +iw", ME, "* You are now invisible and now receiving WALLOPS"),
        (f"{SRV} MODE Carol +ix", ME, "* Your modes: +ix"),
        (f"{SRV} MODE bob +i", ME, "* irc.example sets mode +i on bob"),
    ],
)
def test_render_mode(line: str, me: str | None, expected: str) -> None:
    assert render(parse(line), me) == expected


def test_every_mode_letter_has_words_both_ways() -> None:
    # The words are looked up by letter; the letters and their parameters come from modes.py.
    signed = {f"{sign}{letter}" for letter in modes.ROOM_MODES for sign in "+-"}
    assert set(_ROOM_MODE_WORDS) == signed
    assert set(_USER_MODE_WORDS) == {
        f"{sign}{letter}" for letter in modes.USER_MODES for sign in "+-"
    }


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
        (f"{SRV} 353 carol @ #secret :@alice +bob carol", "Users in #secret: @alice +bob carol"),
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
        (f"{SRV} 352 carol #r b h irc.example bob G :0 Bob", "  #r  bob  b@h  Bob (away)"),
        (f"{SRV} 352 carol #r b h irc.example bob H :0", "  #r  bob  b@h"),
        # status marks before the nick, as in NAMES; '*' is a server operator
        (f"{SRV} 352 carol #r b h irc.example bob G@ :0 Bob", "  #r  @bob  b@h  Bob (away)"),
        (f"{SRV} 352 carol #r b h irc.example bob H+ :0 Bob", "  #r  +bob  b@h  Bob"),
        (
            f"{SRV} 352 carol #r b h irc.example bob H*@ :0 Bob",
            "  #r  @bob  b@h  Bob (server operator)",
        ),
        (
            f"{SRV} 352 carol #r b h irc.example bob G*+ :0",
            "  #r  +bob  b@h (server operator, away)",
        ),
        (f"{SRV} 352 carol #r b h irc.example bob H@+ :0 Bob", "  #r  @bob  b@h  Bob"),
        (
            f"{SRV} 352 carol * b h irc.example bob H* :0 Bob",
            "  *  bob  b@h  Bob (server operator)",
        ),
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
        # whowas, info, links
        (f"{SRV} 314 carol bob b host * :Bob Smith", "bob was bob!b@host (Bob Smith)"),
        (f"{SRV} 314 carol bob b host * :", "bob was bob!b@host"),
        (f"{SRV} 371 carol :ircish-0.1: a server", "ircish-0.1: a server"),
        (f"{SRV} 382 carol config.yaml :Rehashing", "Reloading config.yaml..."),
        (f"{SRV} 364 carol irc.example irc.example :0 A server", "Server irc.example: A server"),
        (
            f"{SRV} 364 carol * far.example :2 Far away",
            "Server far.example (2 hops away): Far away",
        ),
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
        # moderation: replies
        (f"{SRV} 341 carol bob #r", "You invited bob to #r"),
        (f"{SRV} 341 carol #r bob", "You invited bob to #r"),  # RFC 1459 order
        (
            f"{SRV} 367 carol #r x!*@* alice!a@h {NOON}",
            "  #r  x!*@*  by alice on 2026-11-21 10:00",
        ),
        (f"{SRV} 367 carol #r x!*@* alice", "  #r  x!*@*  by alice"),
        (f"{SRV} 367 carol #r x!*@*", "  #r  x!*@*"),
        (f"{SRV} 368 carol #r :End of room ban list", "End of ban list for #r"),
        # moderation: errors through the generic form, where it reads well
        (f"{SRV} 442 carol #r :You're not in that room", "! You're not in that room: #r"),
        (f"{SRV} 482 carol #r :You're not a room operator", "! You're not a room operator: #r"),
        (
            f"{SRV} 441 carol bob #r :They aren't in that room",
            "! They aren't in that room: bob #r",
        ),
        (
            f"{SRV} 478 carol #r b :The room's ban list is full",
            "! The room's ban list is full: #r b",
        ),
        (
            f"{SRV} 481 carol :Permission denied: you're not a server operator",
            "! Permission denied: you're not a server operator",
        ),
        (f"{SRV} 491 carol :No operator block for your host", "! No operator block for your host"),
        (f"{SRV} 464 carol :Password incorrect", "! Password incorrect"),
        (f"{SRV} 525 carol #r :Key is not well-formed", "! Key is not well-formed: #r"),
        # moderation: errors with their own words
        (f"{SRV} 443 carol bob #r :is already in the room", "! bob is already in #r"),
        (f"{SRV} 443 carol bob #r :is already on channel", "! bob is already in #r"),
        (f"{SRV} 472 carol x :is not a room mode here", "! Mode x is not a room mode here"),
        (f"{SRV} 472 carol x :is unknown mode char to me", "! Mode x is unknown mode char to me"),
        (
            f"{SRV} 696 carol #r l 0 :The limit must be a whole number",
            "! The limit must be a whole number: mode l 0 on #r",
        ),
        (f"{SRV} 471 carol #r :Cannot join channel (+l)", "! Cannot join #r: it is full"),
        (
            f"{SRV} 473 carol #r :Cannot join room (+i): it is invite only",
            "! Cannot join #r: it is invite-only; an operator can /invite you",
        ),
        (f"{SRV} 474 carol #r :Cannot join channel (+b)", "! Cannot join #r: you are banned"),
        (
            f"{SRV} 475 carol #r :Cannot join channel (+k)",
            "! Cannot join #r: it needs the right key: /join #r <key>",
        ),
        # unknown numerics: the params after the recipient
        (f"{SRV} 042 carol ABC123 :your unique ID", "ABC123 your unique ID"),
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
        f"{SRV} 374 carol :End of /INFO",
        f"{SRV} 365 carol * :End of /LINKS list",
        # OPER's success: the MODE +o that comes with it says so
        f"{SRV} 381 carol :You are now a server operator",
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


_ODD_PARAMS = [
    "", "\x01", "\x01ACTION", "\x03", "#", "*", "carol", "-1", "9" * 40, "a b", "é",
    "+o", "-k", "+ov-b", "+{arg}", "{room}", "+\x1b[2J", "+l",
]  # fmt: skip
_COMMANDS = [
    "PRIVMSG", "NOTICE", "JOIN", "PART", "QUIT", "NICK", "TOPIC", "KICK", "MODE", "INVITE",
    "KILL", "ERROR", "FAIL", "WARN", "NOTE", "PING", "CAP", "FROB",
    "001", "221", "252", "301", "311", "312", "313", "317", "319", "322", "324", "331", "332",
    "333", "341", "352", "353", "367", "368", "372", "401", "443", "451", "471", "472", "473",
    "474", "475", "696", "704", "999",
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


@pytest.mark.parametrize("target", ["#r", "carol", "bob", "#", ""])
@pytest.mark.parametrize(
    "modestring", ["+o", "-k", "+ov-b", "+l", "-l", "+{arg}", "+\x1b[2J", "+b", "o", "+-", ""]
)
def test_render_mode_never_raises_on_odd_lines(target: str, modestring: str) -> None:
    for args in ([], ["\x03"], ["{room}", "x"], ["1", "2", "3", "4", "5"], ["a\x1b[2Jb"]):
        for prefix in ("carol!c@h", "alice!a@h", "\x02", None):
            msg = Message("MODE", [target, modestring, *args], prefix)
            out = render(msg, "carol")
            assert out is not None and not _UNSAFE.search(out), (msg, out)
