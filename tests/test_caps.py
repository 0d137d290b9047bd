"""IRCv3 capability negotiation and what each capability changes, over real sockets:
CAP LS/REQ/LIST/END, message tags (client tags, TAGMSG, the tag-size limit), server-time,
msgid, echo-message, labeled-response with batch, STATUSMSG and extended-join."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from helpers import SERVER, Client, capped, prefix, settle

from ircish import protocol as p
from ircish.caps import CAPABILITIES
from ircish.config import HistoryConfig
from ircish.protocol import Message, parse

Connect = Callable[..., Client]

#: server-time's format: ISO 8601 UTC with milliseconds.
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def in_room(room: str, *clients: Client) -> None:
    for client in clients:
        client.join(room)
    settle(*clients)


def one(client: Client, command: str) -> Message:
    """The one message with `command` among what `client` has been sent so far."""
    found = [msg for msg in client.messages() if msg.command == command]
    assert len(found) == 1, found
    return found[0]


# -- negotiation ---------------------------------------------------------------------------


def ls_words(client: Client, line: str = "CAP LS 302") -> list[list[str]]:
    client.send(line)
    lines = client.collect_until(rf"^:{SERVER} CAP \* LS :")
    return [parse(text).params[2:] for text in lines if " CAP * LS " in text]


def test_cap_ls_302_lists_every_capability_of_the_table(connect: Connect) -> None:
    (words,) = ls_words(connect())
    names = {word.partition("=")[0] for word in words[-1].split()}
    assert names == set(CAPABILITIES)
    assert "sasl=PLAIN,SCRAM-SHA-256" in words[-1].split()  # no EXTERNAL without client_ca
    assert "draft/account-registration=before-connect" in words[-1].split()


def test_history_caps_are_offered_only_while_history_is_on(start_server) -> None:
    server = start_server(history=HistoryConfig(max_lines=0))
    client = Client(server.address)
    try:
        (words,) = ls_words(client)
        offered = {word.partition("=")[0] for word in words[-1].split()}
        assert offered == set(CAPABILITIES) - {"draft/chathistory", "draft/event-playback"}
        client.send("CAP REQ :draft/chathistory")
        client.expect(rf"^:{SERVER} CAP \* NAK :draft/chathistory")
    finally:
        client.close()


@pytest.mark.parametrize("line", ["CAP LS", "CAP LS 301"])
def test_a_301_client_gets_one_line_without_values(connect: Connect, line: str) -> None:
    (words,) = ls_words(connect(), line)
    assert len(words) == 1 and "=" not in words[0]


def test_req_is_all_or_nothing(connect: Connect) -> None:
    client = connect("alice")
    client.send("CAP REQ :multi-prefix no-such-cap")
    client.expect(rf"^:{SERVER} CAP alice NAK :multi-prefix no-such-cap$")
    client.send("CAP LIST")
    client.expect(rf"^:{SERVER} CAP alice LIST :$")
    client.send("CAP REQ :multi-prefix userhost-in-names")
    client.expect(rf"^:{SERVER} CAP alice ACK :multi-prefix userhost-in-names$")
    client.send("CAP LIST")
    listed = parse(client.expect(rf"^:{SERVER} CAP alice LIST :").string).params[2]
    assert set(listed.split()) == {"multi-prefix", "userhost-in-names"}


def test_req_with_a_minus_drops_a_cap_and_its_tags_go_with_it(connect: Connect) -> None:
    alice = capped(connect, "alice", "server-time", "echo-message")
    in_room("#r", alice)
    alice.send("PRIVMSG #r :with time")
    assert "time" in parse(alice.expect(" PRIVMSG #r :with time").string).tags
    alice.send("CAP REQ :-server-time")
    alice.expect(rf"^:{SERVER} CAP alice ACK :-server-time$")
    alice.send("PRIVMSG #r :without")
    assert parse(alice.expect(" PRIVMSG #r :without").string).tags == {}


def test_a_302_client_has_cap_notify_and_cannot_drop_it(connect: Connect) -> None:
    client = connect()
    ls_words(client)
    client.send("CAP LIST")
    assert parse(client.expect(r" CAP \* LIST :").string).params[2] == "cap-notify"
    client.send("CAP REQ :-cap-notify")
    client.expect(rf"^:{SERVER} CAP \* NAK :-cap-notify$")
    # A bare CAP LS afterwards does not lower the version.
    ls_words(client, "CAP LS")
    client.send("CAP LIST")
    assert parse(client.expect(r" CAP \* LIST :").string).params[2] == "cap-notify"


def test_a_301_client_may_take_cap_notify_and_drop_it(connect: Connect) -> None:
    client = connect()
    ls_words(client, "CAP LS")
    client.send("CAP REQ :cap-notify")
    client.expect(r" CAP \* ACK :cap-notify$")
    client.send("CAP REQ :-cap-notify")
    client.expect(r" CAP \* ACK :-cap-notify$")


def test_cap_after_registration_needs_no_cap_end(connect: Connect) -> None:
    alice = connect("alice")
    alice.send("CAP REQ :echo-message")
    alice.expect(r" CAP alice ACK :echo-message$")
    in_room("#r", alice)
    alice.send("PRIVMSG #r :back to me")
    alice.expect(rf"^:{re.escape(prefix('alice'))} PRIVMSG #r :back to me$")


# -- server-time and msgid -----------------------------------------------------------------


def test_one_event_has_one_msgid_and_time_for_all_its_receivers(connect: Connect) -> None:
    alice = connect("alice")
    bob = capped(connect, "bob", "server-time", "message-tags")
    carol = capped(connect, "carol", "message-tags", "server-time")
    in_room("#r", alice, bob, carol)
    for line in ("PRIVMSG #r :hi", "TOPIC #r :t", "MODE #r +v bob", "JOIN #other,#r"):
        alice.send(line)
    alice.send("PART #r")
    alice.sync()  # alice's lines are handled: their events are queued to bob and carol
    seen_bob = [m for m in bob.messages() if m.prefix == prefix("alice")]
    seen_carol = [m for m in carol.messages() if m.prefix == prefix("alice")]
    assert [m.command for m in seen_bob] == ["PRIVMSG", "TOPIC", "MODE", "PART"]
    assert [(m.tags["msgid"], m.tags["time"]) for m in seen_bob] == [
        (m.tags["msgid"], m.tags["time"]) for m in seen_carol
    ]
    assert len({m.tags["msgid"] for m in seen_bob}) == 4


def test_a_client_without_caps_gets_no_tags(connect: Connect) -> None:
    alice = capped(connect, "alice", "message-tags")
    bob = connect("bob")
    in_room("#r", alice, bob)
    alice.send("@+typing=active PRIVMSG #r :plain for bob")
    bob.expect(rf"^:{re.escape(prefix('alice'))} PRIVMSG #r :plain for bob$")


# -- message-tags: client tags, TAGMSG, limits ---------------------------------------------


def test_client_tags_reach_only_clients_with_message_tags(connect: Connect) -> None:
    alice = capped(connect, "alice", "message-tags")
    bob = capped(connect, "bob", "message-tags")
    carol = connect("carol")
    in_room("#r", alice, bob, carol)
    alice.send("@+draft/reply=abc;+draft/react=\\:) PRIVMSG #r :tagged")
    msg = parse(bob.expect(" PRIVMSG #r :tagged").string)
    assert msg.tags["+draft/reply"] == "abc"
    assert msg.tags["+draft/react"] == ";)"
    assert msg.tags["msgid"]
    carol.expect(rf"^:{re.escape(prefix('alice'))} PRIVMSG #r :tagged$")


def test_tags_from_a_client_without_message_tags_are_not_relayed(connect: Connect) -> None:
    alice = connect("alice")
    bob = capped(connect, "bob", "message-tags")
    in_room("#r", alice, bob)
    alice.send("@+typing=active;label=x PRIVMSG #r :sneaky")
    msg = parse(bob.expect(" PRIVMSG #r :sneaky").string)
    assert set(msg.tags) == {"msgid"}


def test_tagmsg_reaches_only_clients_with_message_tags(connect: Connect) -> None:
    alice = capped(connect, "alice", "message-tags")
    bob = capped(connect, "bob", "message-tags")
    carol = connect("carol")
    in_room("#r", alice, bob, carol)
    alice.send("@+typing=active TAGMSG #r")
    alice.send("@+typing=paused TAGMSG bob")
    alice.send("@+typing=done TAGMSG carol")
    alice.sync()
    got = [m for m in bob.messages() if m.command == "TAGMSG"]
    assert [(m.params, m.tags["+typing"]) for m in got] == [
        (("#r",), "active"),
        (("bob",), "paused"),
    ]
    assert not any("TAGMSG" in line for line in carol.sync())


def test_a_server_tag_sent_by_a_client_is_dropped(connect: Connect) -> None:
    alice = capped(connect, "alice", "message-tags")
    bob = capped(connect, "bob", "message-tags")
    in_room("#r", alice, bob)
    alice.send("@msgid=forged;time=2000-01-01T00:00:00.000Z;+ok=1 PRIVMSG #r :forge")
    msg = parse(bob.expect(" PRIVMSG #r :forge").string)
    assert msg.tags["msgid"] != "forged" and "time" not in msg.tags and msg.tags["+ok"] == "1"


def test_oversize_tags_get_417_and_nothing_is_relayed(connect: Connect) -> None:
    alice = capped(connect, "alice", "message-tags")
    bob = capped(connect, "bob", "message-tags")
    in_room("#r", alice, bob)
    too_big = "+big=" + "x" * (p.MAX_CLIENT_TAG_BYTES - 4)  # 4095 bytes of tag data
    alice.send(f"@{too_big} PRIVMSG #r :too much")
    alice.expect(rf"^:{SERVER} {p.ERR_INPUTTOOLONG} alice :")
    just_fits = "+big=" + "y" * (p.MAX_CLIENT_TAG_BYTES - 5)  # 4094 bytes
    # The tags have their own budget: a full 512-byte line fits after them.
    text = "z" * (512 - 2 - len("PRIVMSG #r :"))
    alice.send(f"@{just_fits} PRIVMSG #r :{text}")
    msg = parse(bob.expect(" PRIVMSG #r :").string)
    assert msg.tags["+big"] == "y" * (p.MAX_CLIENT_TAG_BYTES - 5)
    assert msg.params[1].startswith("zzz")
    assert not any("too much" in line for line in bob.sync())


# -- echo-message ---------------------------------------------------------------------------


def test_echo_message_returns_the_relayed_line_with_its_msgid(connect: Connect) -> None:
    alice = capped(connect, "alice", "echo-message", "message-tags")
    bob = capped(connect, "bob", "message-tags")
    in_room("#r", alice, bob)
    for line in ("PRIVMSG #r :room", "NOTICE #r :note", "PRIVMSG bob :dm", "@+typing=a TAGMSG #r"):
        alice.send(line)
    mine = [m for m in alice.messages() if m.prefix == prefix("alice")]  # (a sync, too)
    theirs = [m for m in bob.messages() if m.prefix == prefix("alice")]
    assert [(m.command, m.params) for m in mine] == [(m.command, m.params) for m in theirs]
    assert [m.tags["msgid"] for m in mine] == [m.tags["msgid"] for m in theirs]
    assert len(mine) == 4


def test_a_refused_message_is_not_echoed(connect: Connect) -> None:
    alice = connect("alice")
    bob = capped(connect, "bob", "echo-message")
    in_room("#r", alice, bob)
    alice.send("MODE #r +m")
    bob.expect(" MODE #r \\+m")
    bob.send("PRIVMSG #r :muted")
    lines = bob.sync()
    assert any(f" {p.ERR_CANNOTSENDTOCHAN} bob #r " in line for line in lines)
    assert not any("PRIVMSG #r :muted" in line for line in lines)


def test_a_message_to_oneself_comes_as_echo_and_as_message(connect: Connect) -> None:
    alice = capped(connect, "alice", "echo-message")
    alice.send("PRIVMSG alice :me")
    assert [line for line in alice.sync() if "PRIVMSG alice" in line] == [
        f":{prefix('alice')} PRIVMSG alice :me"
    ] * 2
    # Labeled: the echo carries the label; the message as received does not; no batch.
    alice.send("CAP REQ :labeled-response batch")
    alice.send("@label=self PRIVMSG alice :again")
    got = [parse(line) for line in alice.sync() if "CAP" not in line]
    assert [m.command for m in got] == ["PRIVMSG", "PRIVMSG"]
    assert sorted(m.tags.get("label", "") for m in got) == ["", "self"]


# -- labeled-response and batch ---------------------------------------------------------


def test_a_labeled_command_with_no_answer_gets_ack(connect: Connect) -> None:
    alice = capped(connect, "alice", "labeled-response", "batch")
    connect("bob")
    alice.send("@label=q1 PRIVMSG bob :hi")
    alice.expect(rf"^@label=q1 :{SERVER} ACK$")


def test_a_one_line_answer_carries_the_label(connect: Connect) -> None:
    alice = capped(connect, "alice", "labeled-response", "batch", "echo-message")
    bob = connect("bob")
    in_room("#r", alice, bob)
    alice.send("@label=q2 PRIVMSG #r :hi")
    echo = parse(alice.expect(" PRIVMSG #r :hi").string)
    assert echo.tags == {"label": "q2"}
    alice.send("@label=q3 PING tok")
    assert parse(alice.expect(" PONG ").string).tags == {"label": "q3"}
    # Bob, who sent nothing labeled, sees the message plain.
    bob.expect(rf"^:{re.escape(prefix('alice'))} PRIVMSG #r :hi$")


def test_a_several_line_answer_comes_in_one_labeled_batch(connect: Connect) -> None:
    alice = capped(connect, "alice", "labeled-response", "batch")
    alice.send("@label=q4 JOIN #fresh")
    lines = alice.collect_until(r"^:\S+ BATCH -")
    opening, *inside, closing = (parse(line) for line in lines)
    assert opening.command == "BATCH" and opening.tags == {"label": "q4"}
    ref = opening.params[0][1:]
    assert opening.params == (f"+{ref}", "labeled-response")
    assert [m.command for m in inside] == ["JOIN", p.RPL_NAMREPLY, p.RPL_ENDOFNAMES]
    assert all(m.tags == {"batch": ref} for m in inside)
    assert closing.params == (f"-{ref}",)
    # The next batch has another reference.
    alice.send("@label=q5 LUSERS")
    refs = [parse(line).params[0] for line in alice.sync() if " BATCH +" in line]
    assert len(refs) == 1 and refs[0] != f"+{ref}"


def test_a_labeled_line_refused_before_dispatch_keeps_its_label(connect: Connect) -> None:
    alice = capped(connect, "alice", "labeled-response", "batch")
    alice.send("@label=bad NO_SUCH_COMMAND")
    reply = parse(alice.expect(f" {p.ERR_UNKNOWNCOMMAND} alice ").string)
    assert reply.tags == {"label": "bad"}
    alice.send("@label=gone WHATEVER")
    assert parse(alice.expect(f" {p.ERR_UNKNOWNCOMMAND} alice ").string).tags == {"label": "gone"}


def test_a_label_without_the_cap_is_ignored(connect: Connect) -> None:
    alice = connect("alice")
    alice.send("@label=q7 PING tok")
    alice.expect(rf"^:{SERVER} PONG {SERVER} tok$")


# -- STATUSMSG and extended-join ------------------------------------------------------------


def test_statusmsg_reaches_only_members_with_that_status(connect: Connect) -> None:
    alice, bob, carol, dave = (connect(n) for n in ("alice", "bob", "carol", "dave"))
    in_room("#r", alice, bob, carol, dave)
    alice.send("MODE #r +v bob")
    settle(alice, bob, carol, dave)
    carol.send("PRIVMSG @#r :ops only")
    carol.send("NOTICE +#r :voice and ops")
    carol.sync()
    got = {
        c.nick: [m.params for m in c.messages() if m.prefix == prefix("carol")]
        for c in (alice, bob, carol, dave)
    }
    assert got == {
        "alice": [("@#r", "ops only"), ("+#r", "voice and ops")],
        "bob": [("+#r", "voice and ops")],
        "carol": [],
        "dave": [],
    }


def test_statusmsg_keeps_the_rooms_rules(connect: Connect) -> None:
    alice = connect("alice")
    outsider = connect("outsider")
    in_room("#r", alice)
    outsider.send("PRIVMSG @#r :from outside")
    outsider.expect(rf" {p.ERR_CANNOTSENDTOCHAN} outsider #r ")
    assert alice.sync() == []


def test_extended_join_shows_account_and_realname(connect: Connect) -> None:
    bob = capped(connect, "bob", "extended-join")
    carol = connect("carol")
    in_room("#r", bob, carol)
    alice = connect()
    alice.register("alice", realname="Alice Liddell")
    alice.join("#r")
    bob.expect(rf"^:{re.escape(prefix('alice'))} JOIN #r \* :Alice Liddell$")
    carol.expect(rf"^:{re.escape(prefix('alice'))} JOIN #r$")


# -- multi-prefix, userhost-in-names --------------------------------------------------------


def test_multi_prefix_shows_every_status_in_names_who_and_whois(connect: Connect) -> None:
    alice = connect("alice")
    bob = capped(connect, "bob", "multi-prefix")
    carol = connect("carol")
    in_room("#r", alice, bob, carol)
    alice.send("MODE #r +v alice")
    alice.sync()
    assert "@+alice" in bob.names("#r")
    assert "@alice" in carol.names("#r")
    bob.send("WHO #r")
    flags = {m.params[5]: m.params[6] for m in bob.messages() if m.command == p.RPL_WHOREPLY}
    assert flags["alice"] == "H@+"
    bob.send("WHOIS alice")
    rooms = [m.params[2] for m in bob.messages() if m.command == p.RPL_WHOISCHANNELS]
    assert rooms == ["@+#r"]


def test_userhost_in_names_lists_full_masks(connect: Connect) -> None:
    alice = connect("alice")
    bob = capped(connect, "bob", "userhost-in-names", "multi-prefix")
    in_room("#r", alice, bob)
    assert bob.names("#r") == [f"@{prefix('alice')}", prefix("bob")]


# -- away-notify, setname, invite-notify ------------------------------------------------------


def test_away_notify_tells_neighbours_with_the_cap_and_joins_of_away_people(
    connect: Connect,
) -> None:
    alice = connect("alice")
    bob = capped(connect, "bob", "away-notify")
    carol = connect("carol")
    in_room("#r", alice, bob, carol)
    alice.send("AWAY :lunch")
    alice.expect(f" {p.RPL_NOWAWAY} alice ")
    bob.expect(rf"^:{re.escape(prefix('alice'))} AWAY :lunch$")
    alice.send("AWAY")
    bob.expect(rf"^:{re.escape(prefix('alice'))} AWAY$")
    assert not any("AWAY" in line for line in carol.sync())
    # Someone already away who joins: the room's away-notify members learn it at once.
    dave = connect("dave")
    dave.send("AWAY :not here")
    dave.join("#r")
    lines = bob.collect_until(rf"^:{re.escape(prefix('dave'))} AWAY :not here$")
    assert lines[-2] == f":{prefix('dave')} JOIN #r"


def test_setname_changes_the_realname_and_tells_those_with_the_cap(connect: Connect) -> None:
    alice = capped(connect, "alice", "setname")
    bob = capped(connect, "bob", "setname")
    carol = connect("carol")
    in_room("#r", alice, bob, carol)
    alice.send("SETNAME :Alice P. Liddell")
    alice.expect(rf"^:{re.escape(prefix('alice'))} SETNAME :Alice P. Liddell$")
    bob.expect(rf"^:{re.escape(prefix('alice'))} SETNAME :Alice P. Liddell$")
    carol.send("WHOIS alice")
    assert one(carol, p.RPL_WHOISUSER).params[-1] == "Alice P. Liddell"
    assert not any("SETNAME" in line for line in carol.sync())
    alice.send("SETNAME :" + "x" * 101)
    alice.expect(rf"^:{SERVER} FAIL SETNAME INVALID_REALNAME :")


def test_invite_notify_tells_the_operators_of_an_invite_only_room(connect: Connect) -> None:
    alice = connect("alice")
    bob = capped(connect, "bob", "invite-notify")
    carol = capped(connect, "carol", "invite-notify")
    dave = connect("dave")
    in_room("#r", alice, bob, carol)
    alice.send("MODE #r +o bob")
    alice.send("MODE #r +i")
    alice.send("INVITE dave #r")
    alice.expect(f" {p.RPL_INVITING} alice dave")
    dave.expect(rf"^:{re.escape(prefix('alice'))} INVITE dave :?#r$")
    bob.expect(rf"^:{re.escape(prefix('alice'))} INVITE dave :?#r$")
    assert not any(" INVITE " in line for line in carol.sync())  # not an operator under +i


# -- MONITOR ------------------------------------------------------------------------------------


def test_monitor_tells_who_is_online_now_and_later(connect: Connect) -> None:
    alice = connect("alice")
    watcher = connect("watcher")
    watcher.send("MONITOR + alice,bob")
    lines = watcher.sync()
    assert f":{SERVER} {p.RPL_MONONLINE} watcher :{prefix('alice')}" in lines
    assert f":{SERVER} {p.RPL_MONOFFLINE} watcher :bob" in lines
    bob = connect("bob")
    watcher.expect(rf"^:{SERVER} {p.RPL_MONONLINE} watcher :{re.escape(prefix('bob'))}$")
    bob.send("NICK Bob")  # only the case: no news
    bob.send("NICK robert")
    lines = watcher.collect_until(rf"^:{SERVER} {p.RPL_MONOFFLINE} watcher :Bob$")
    assert len(lines) == 1  # the change of case alone said nothing
    bob.send("NICK bob")  # back to a watched nick
    watcher.expect(rf"^:{SERVER} {p.RPL_MONONLINE} watcher :{re.escape(prefix('bob'))}$")
    alice.send("QUIT :bye")
    watcher.expect(rf"^:{SERVER} {p.RPL_MONOFFLINE} watcher :alice$")


def test_monitor_list_remove_clear_and_status(connect: Connect) -> None:
    connect("alice")
    watcher = connect("watcher")
    watcher.send("MONITOR + alice,bob,carol")
    watcher.send("MONITOR - carol")
    watcher.sync()
    watcher.send("MONITOR L")
    lines = watcher.collect_until(f" {p.RPL_ENDOFMONLIST} ")
    assert parse(lines[0]).params[1] == "alice,bob"
    watcher.send("MONITOR S")
    assert [m.command for m in watcher.messages()] == [p.RPL_MONONLINE, p.RPL_MONOFFLINE]
    watcher.send("MONITOR C")
    watcher.send("MONITOR L")
    assert [m.command for m in watcher.messages()] == [p.RPL_ENDOFMONLIST]


def test_monitor_stops_at_its_limit(connect: Connect) -> None:
    watcher = connect("watcher")
    nicks = [f"n{i}" for i in range(101)]
    watcher.send("MONITOR + " + ",".join(nicks[:60]))
    watcher.send("MONITOR + " + ",".join(nicks[60:]))
    full = one(watcher, p.ERR_MONLISTFULL)
    assert full.params[1] == "100"


def test_a_watcher_that_leaves_is_forgotten(connect: Connect) -> None:
    watcher = connect("watcher")
    watcher.send("MONITOR + alice")
    watcher.sync()
    watcher.close()
    alice = connect("alice")  # would be told to a closed watcher: nothing breaks
    alice.send("QUIT")
    other = connect("other")
    other.send("MONITOR L")
    assert [m.command for m in other.messages()] == [p.RPL_ENDOFMONLIST]


def test_extended_monitor_tells_a_watcher_of_away_changes(connect: Connect) -> None:
    alice = connect("alice")
    watcher = capped(connect, "watcher", "extended-monitor", "away-notify")
    plain_watcher = capped(connect, "plain", "away-notify")
    for client in (watcher, plain_watcher):
        client.send("MONITOR + alice")
        client.sync()
    alice.send("AWAY :gone")
    alice.sync()
    watcher.expect(rf"^:{re.escape(prefix('alice'))} AWAY :gone$")
    assert not any("AWAY" in line for line in plain_watcher.sync())


# -- WHOX --------------------------------------------------------------------------------------


def test_whox_gives_the_fields_asked_in_the_specs_order(connect: Connect) -> None:
    alice = connect()
    alice.register("alice", realname="Alice Liddell")
    bob = connect("bob")
    in_room("#r", alice)
    for fields in ("%tcuihsnfdlaor,123", "%roalfdnshiuct,123"):
        bob.send(f"WHO alice {fields}")
        reply = one(bob, p.RPL_WHOSPCRPL)
        assert reply.params[:10] == (
            "bob", "123", "*", "u", "127.0.0.1", "127.0.0.1", SERVER, "alice", "H", "0",
        )  # fmt: skip
        assert reply.params[10].isdigit() and reply.params[11:] == ("0", "n/a", "Alice Liddell")
    bob.send("WHO #r %tn,7")
    assert one(bob, p.RPL_WHOSPCRPL).params == ("bob", "7", "alice")
    bob.send("WHO alice %n,toolong")
    assert one(bob, p.RPL_WHOSPCRPL).params == ("bob", "alice")


# -- bot mode ----------------------------------------------------------------------------------


def test_bot_mode_shows_in_whois_who_and_a_tag(connect: Connect) -> None:
    robot = connect("robot")
    bob = capped(connect, "bob", "message-tags")
    carol = connect("carol")
    in_room("#r", robot, bob, carol)
    robot.send("MODE robot +B")
    robot.expect(r"^:robot!\S+ MODE robot :?\+B$")
    robot.send("PRIVMSG #r :beep")
    robot.sync()
    msg = parse(bob.expect(" PRIVMSG #r :beep").string)
    assert "bot" in msg.tags
    carol.expect(rf"^:{re.escape(prefix('robot'))} PRIVMSG #r :beep$")
    carol.send("WHOIS robot")
    assert one(carol, p.RPL_WHOISBOT).params[1] == "robot"
    carol.send("WHO robot")
    assert one(carol, p.RPL_WHOREPLY).params[6] == "HB"


def test_isupport_advertises_what_the_caps_commands_do(connect: Connect) -> None:
    client = connect()
    client.send_registration("alice")
    lines = client.collect_until(r" (376|422) ")
    tokens = {
        word.split("=")[0]: word.partition("=")[2]
        for msg in map(parse, lines)
        if msg.command == p.RPL_ISUPPORT
        for word in msg.params[1:-1]
    }
    assert tokens["BOT"] == "B"
    assert tokens["MONITOR"] == "100"
    assert tokens["STATUSMSG"] == "@+"
    assert "WHOX" in tokens
