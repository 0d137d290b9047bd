def test_register_and_chat(connect):
    alice = connect("alice")
    bob = connect("bob")
    alice.send("JOIN #room")
    alice.expect(r" 366 alice #room ")
    bob.send("JOIN #room")
    alice.expect(r"^:bob!u@127.0.0.1 JOIN #room$")
    bob.send("PRIVMSG #room :hello there")
    alice.expect(r"^:bob!u@127.0.0.1 PRIVMSG #room :hello there$")
