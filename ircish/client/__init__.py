"""The `ircish-client` terminal client: `session` owns the connection and what it knows about
rooms and targets, `ui` shows events (interactive prompt or scripted stdin/stdout),
`input_line` turns a typed line into what to send, and `cli` is the Click layer over them.
"""
