import re

from conftest import prefix


def test_register_and_chat(connect):
    alice = connect("alice")
    bob = connect("bob")
    alice.join("#room")
    bob.send("JOIN #room")
    alice.expect(rf"^:{re.escape(prefix('bob'))} JOIN #room$")
    bob.send("PRIVMSG #room :hello there")
    alice.expect(rf"^:{re.escape(prefix('bob'))} PRIVMSG #room :hello there$")
