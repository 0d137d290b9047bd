"""Command handlers, one module per command family. This folder is imported as the package
`ircish.commands` (see ircish/commands.py), never as a top-level `commands`."""
