"""`python -m ircish`: the same as `ircish-server`."""

from ircish.cli import main

if __name__ == "__main__":
    main(prog_name="ircish-server")
