"""The README's commands against what the project has: the options it gives ircish-server
and ircish-client, the extras, scripts, markers and files its set-up lines name, the
WeeChat lines for both the 3.x and 4.x option names (issue 11: Debian 12 has WeeChat 3.8,
which has no `tls` option), and the console operator line it quotes."""

from __future__ import annotations

import configparser
import re

import click
import pytest
from helpers import ROOT, wait_for

from ircish.cli import main as server_main
from ircish.client.cli import main as client_main

README = (ROOT / "README.md").read_text(encoding="utf-8")
#: What a reader copies: `inline code` and indented code lines.
CODE = re.findall(r"`([^`\n]+)`", README) + re.findall(r"^ {4}(.+)$", README, re.MULTILINE)
SETUP = configparser.ConfigParser()
SETUP.read(ROOT / "setup.cfg")


def options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def invocations(program: str) -> list[list[str]]:
    """The words after each `program ...` in the README's code, up to a `#` comment (what
    follows `program:` is an error message, not a command)."""
    found = [words for code in CODE for words in re.findall(rf"{program}((?: +[^\s`]+)+)", code)]
    assert found, f"the README never runs {program}"
    runs = []
    for words in found:
        split = words.split()
        comment = next((i for i, word in enumerate(split) if word.startswith("#")), len(split))
        runs.append(split[:comment])
    return runs


@pytest.mark.parametrize(
    ("program", "command"), [("ircish-server", server_main), ("ircish-client", client_main)]
)
def test_every_option_the_readme_gives_exists(program: str, command: click.Command) -> None:
    known = options(command) | {"--help", "-h"}
    subcommands = set(getattr(command, "commands", {}))
    for words in invocations(program):
        given = [word.strip("[]") for word in words]
        unknown = [w for w in given if w.startswith("-") and w.split("=")[0] not in known]
        assert not unknown, f"`{program} {' '.join(words)}`: no such option {unknown}"
        if subcommands and not given[0].startswith("-"):
            assert given[0] in subcommands, f"`{program} {' '.join(words)}`: no such command"


def test_the_setup_lines_name_what_the_project_has(pytestconfig: pytest.Config) -> None:
    """`pip install '.[test]'`, `.venv/bin/<script>`, `pytest -m <marker>`, `examples/...`."""
    extras = set(SETUP["options.extras_require"])
    for extra in re.findall(r"'\.\[(\w+)\]'", README):
        assert extra in extras, f"the README installs the extra {extra!r}; setup.cfg has {extras}"
    scripts = {
        line.split("=")[0].strip()
        for line in SETUP["options.entry_points"]["console_scripts"].splitlines()
        if line.strip()
    }
    used = set(re.findall(r"\.venv/bin/([\w-]+)", README))
    assert used - {"pip", "python"} <= scripts, used
    markers = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    for marker in re.findall(r"pytest -q -m (\w+)", README):
        assert marker in markers, f"the README runs `pytest -m {marker}`; declared: {markers}"
    for path in set(re.findall(r"\bexamples/[\w.-]+\.yaml", README)) - {"examples/bad.yaml"}:
        assert (ROOT / path).is_file(), path


def weechat_commands() -> list[str]:
    return [code for code in CODE if re.match(r"/(server add|set irc\.server\.)", code)]


def test_weechat_lines_are_given_for_3x_and_4x() -> None:
    """WeeChat 4.0 renamed the `ssl` option to `tls`; 3.x (Debian 12's 3.8) ignores `-tls`
    and has no `irc.server.X.tls`. Every WeeChat line that says `tls` has its 3.x twin."""
    commands = weechat_commands()
    with_tls = [c for c in commands if re.search(r"\btls\b", c)]
    assert with_tls, commands
    for command in with_tls:
        twin = re.sub(r"\btls\b", "ssl", command)
        assert twin in commands, f"`{command}` (WeeChat 4.x) has no 3.x line `{twin}`"
    assert "/set irc.server.ircish.ssl off" in commands
    assert any(c.endswith(" -ssl") for c in commands)


def test_the_console_operator_line_is_the_one_the_server_prints(server_process) -> None:
    # Inline (it may wrap) or on a code line.
    quoted = re.findall(r"`(No operators in the config: [^`]*)`", README)
    quoted += re.findall(r"^ {4}.*(No operators in the config: .*)$", README, re.MULTILINE)
    assert quoted, "the README does not show the console operator line"
    server = server_process((ROOT / "examples" / "config.yaml").read_text())
    wait_for(lambda: "No operators" in server.log())
    assert server.stop() == 0
    for text in quoted:
        pattern = re.escape(re.sub(r"\s+", " ", text)).replace(re.escape("<token>"), r"\S+")
        assert re.search(pattern, server.log()), (text, server.log())
