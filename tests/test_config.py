"""Tests for ircish.config: the example file, every kind of error message, overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ircish.config import (
    RESTART_ONLY,
    ClusterConfig,
    Config,
    ConfigError,
    Limits,
    LogConfig,
    MetricsConfig,
    OperatorConfig,
    RoomConfig,
    ServerConfig,
    changed_settings,
    default_config,
    describe_setting,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "config.yaml"
#: Well formed, so the config takes it; no password is known to match it.
HASH = "scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA==$a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="
LISTEN_MESSAGE = "metrics.listen: expected host:port such as 127.0.0.1:9108 or [::1]:9108, got "
HASH_MESSAGE = "must be a scrypt hash made by `ircish-server hash-password`"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    prefix = f"{path}: "
    assert message.startswith(prefix)
    return message[len(prefix) :]


# --- the example file -----------------------------------------------------------------------


def test_example_loads_with_expected_values() -> None:
    config = load_config(EXAMPLE)
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 6667
    assert config.server.password is None
    assert config.server.motd is not None
    assert "Welcome to ircish!" in config.server.motd
    assert len(config.server.motd.splitlines()) > 1
    assert config.rooms == (
        RoomConfig(name="#general", topic="General chat"),
        RoomConfig(name="#help", topic="Ask here"),
    )
    assert config.log == LogConfig()
    assert config.operators == ()
    # The example documents the defaults, so apart from motd and rooms it *is* the default.
    assert config.limits == Limits()
    assert dataclasses.replace(config.server, motd=None) == ServerConfig()
    assert config.cluster is None  # it runs without Redis


def test_example_mentions_every_setting() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert set(data) == {f.name for f in dataclasses.fields(Config)}
    assert set(data["server"]) == {f.name for f in dataclasses.fields(ServerConfig)}
    assert set(data["limits"]) == {f.name for f in dataclasses.fields(Limits)}
    assert set(data["log"]) == {f.name for f in dataclasses.fields(LogConfig)}
    for room in data["rooms"]:
        assert set(room) == {f.name for f in dataclasses.fields(RoomConfig)}


def commented_operators_example() -> str:
    """The example's commented-out `operators:` entry, uncommented."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("# operators:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line.removeprefix("# "))
    return "\n".join(block) + "\n"


def test_example_operator_entry_shows_every_key_and_its_placeholder_is_refused(
    tmp_path: Path,
) -> None:
    text = commented_operators_example()
    entry = yaml.safe_load(text)["operators"][0]
    assert set(entry) == {f.name for f in dataclasses.fields(OperatorConfig)}
    # Copied as it is, the placeholder stops the server: nobody runs with a sample hash.
    assert load_error(tmp_path, text) == (
        f"operators[0].password: {HASH_MESSAGE} (the salt is not valid base64)"
    )
    # With a real hash pasted in, it loads.
    config = load_config(write_config(tmp_path, text.replace(entry["password"], HASH)))
    assert config.operators == (OperatorConfig("alice", HASH, ("127.0.0.1", "10.0.*")),)


# --- valid input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Config()),
        ("# only a comment\n", Config()),
        ("server:\nlimits:\nrooms:\n", Config()),
        ("log: {level: debug}\n", Config(log=LogConfig(level="DEBUG"))),
        ("log: {format: json, file: null}\n", Config(log=LogConfig(format="json"))),
        ("metrics: {listen: '[::1]:0'}\n", Config(metrics=MetricsConfig(listen="[::1]:0"))),
        ("server: {port: 0}\n", Config(server=ServerConfig(port=0))),
        ("server: {password: s3cret}\n", Config(server=ServerConfig(password="s3cret"))),
        ("server: {motd: null}\n", Config()),
        (
            "limits: {max_line_bytes: 1024, read_buffer_bytes: 1024}\n",
            Config(limits=Limits(max_line_bytes=1024, read_buffer_bytes=1024)),
        ),
        ("rooms:\n  - name: '#a'\n", Config(rooms=(RoomConfig(name="#a"),))),
        (
            "rooms:\n  - {name: '#a', topic: hi}\n  - {name: '#b'}\n",
            Config(rooms=(RoomConfig("#a", "hi"), RoomConfig("#b"))),
        ),
        # YAML merge keys still work; only a key written twice by hand is an error.
        (
            "rooms:\n  - &a {name: '#a', topic: shared}\n  - {<<: *a, name: '#b'}\n",
            Config(rooms=(RoomConfig("#a", "shared"), RoomConfig("#b", "shared"))),
        ),
    ],
)
def test_valid_files(tmp_path: Path, text: str, expected: Config) -> None:
    assert load_config(write_config(tmp_path, text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("operators:\n", ()),
        ("operators: []\n", ()),
        (
            f"operators:\n  - name: alice\n    password: '{HASH}'\n",
            (OperatorConfig("alice", HASH, ("*",)),),
        ),
        (
            f"operators:\n  - {{name: alice, password: '{HASH}', hosts: ['127.0.0.1', '*.lan']}}\n"
            f"  - {{name: bob, password: '{HASH}', hosts: ['10.?.0.*']}}\n",
            (
                OperatorConfig("alice", HASH, ("127.0.0.1", "*.lan")),
                OperatorConfig("bob", HASH, ("10.?.0.*",)),
            ),
        ),
        # An unquoted hash is a plain YAML string too ('$' means nothing to YAML).
        (f"operators: [{{name: ops, password: {HASH}}}]\n", (OperatorConfig("ops", HASH),)),
    ],
)
def test_valid_operators(tmp_path: Path, text: str, expected: tuple[OperatorConfig, ...]) -> None:
    assert load_config(write_config(tmp_path, text)).operators == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "operators: [{name: alice, password: hunter2}]\n",
            f"operators[0].password: {HASH_MESSAGE} (plain-text passwords are not accepted)",
        ),
        (
            "operators: [{name: alice, password: 'scrypt$16384$8$1$abc'}]\n",
            f"operators[0].password: {HASH_MESSAGE} (not in the form scrypt$n$r$p$salt$hash)",
        ),
        (
            f"operators: [{{name: alice, password: '{HASH.replace('16384', '1000')}'}}]\n",
            (
                f"operators[0].password: {HASH_MESSAGE} "
                "(n must be a power of two between 1024 and 1048576, got 1000)"
            ),
        ),
        (
            "operators: [{name: alice, password: ''}]\n",
            f"operators[0].password: {HASH_MESSAGE} (plain-text passwords are not accepted)",
        ),
        (
            "operators: [{name: alice, password: 1234}]\n",
            "operators[0].password: expected a string, got 1234 (quote it)",
        ),
        ("operators: [{name: alice}]\n", "operators[0].password: required key is missing"),
        (f"operators: [{{password: '{HASH}'}}]\n", "operators[0].name: required key is missing"),
        (
            f"operators: [{{name: '', password: '{HASH}'}}]\n",
            "operators[0].name: must not be empty",
        ),
        (
            f"operators: [{{name: 'al ice', password: '{HASH}'}}]\n",
            "operators[0].name: must not contain spaces or control characters, got 'al ice'",
        ),
        (
            f"operators: [{{name: alice, password: '{HASH}', colour: red}}]\n",
            "operators[0].colour: unknown key",
        ),
        (
            f"operators:\n  - {{name: alice, password: '{HASH}'}}\n"
            f"  - {{name: bob, password: '{HASH}'}}\n"
            f"  - {{name: alice, password: '{HASH}'}}\n",
            "operators[2].name: duplicate operator 'alice' (same as operators[0])",
        ),
        (
            f"operators:\n  - {{name: Alice, password: '{HASH}'}}\n"
            f"  - {{name: ALICE, password: '{HASH}'}}\n",
            "operators[1].name: duplicate operator 'ALICE' (same as operators[0])",
        ),
        (
            f"operators: [{{name: alice, password: '{HASH}', hosts: []}}]\n",
            "operators[0].hosts: must not be an empty list",
        ),
        (
            f"operators: [{{name: alice, password: '{HASH}', hosts: null}}]\n",
            "operators[0].hosts: must not be an empty list",
        ),
        (
            f"operators: [{{name: alice, password: '{HASH}', hosts: '*'}}]\n",
            "operators[0].hosts: expected a list, got '*'",
        ),
        (
            f"operators: [{{name: alice, password: '{HASH}', hosts: ['*', '']}}]\n",
            "operators[0].hosts[1]: must not be empty",
        ),
        (
            f"operators: [{{name: alice, password: '{HASH}', hosts: ['10.0.0.1 *']}}]\n",
            (
                "operators[0].hosts[0]: must not contain spaces or control characters, "
                "got '10.0.0.1 *'"
            ),
        ),
        (
            f"operators: [{{name: alice, password: '{HASH}', hosts: [10]}}]\n",
            "operators[0].hosts[0]: expected a string, got 10 (quote it)",
        ),
        ("operators: {name: alice}\n", "operators: expected a list, got a mapping"),
    ],
)
def test_operator_errors(tmp_path: Path, text: str, message: str) -> None:
    assert load_error(tmp_path, text) == message


def test_operator_password_stays_out_of_reprs() -> None:
    config = Config(operators=(OperatorConfig("alice", HASH),))
    assert HASH not in repr(config)
    assert "alice" in repr(config)


def test_int_is_accepted_for_float_and_stored_as_float() -> None:
    limits = parse_config({"limits": {"ping_timeout": 5, "registration_timeout": 2.5}}).limits
    assert limits.ping_timeout == 5.0
    assert type(limits.ping_timeout) is float
    assert limits.registration_timeout == 2.5


def test_parse_config_accepts_none_and_dicts() -> None:
    assert parse_config(None) == default_config() == Config()
    config = parse_config({"server": {"name": "irc.example.org"}, "rooms": [{"name": "#x"}]})
    assert config.server.name == "irc.example.org"
    assert config.rooms == (RoomConfig("#x"),)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # wrong type
        ("limits: {sendq_bytes: abc}\n", "limits.sendq_bytes: expected an integer, got 'abc'"),
        ("server: {name: 42}\n", "server.name: expected a string, got 42 (quote it)"),
        (
            "server: {password: 1234}\n",
            "server.password: expected a string or null, got 1234 (quote it)",
        ),
        ("limits: {ping_interval: soon}\n", "limits.ping_interval: expected a number, got 'soon'"),
        ("limits: {max_clients: 10.5}\n", "limits.max_clients: expected an integer, got 10.5"),
        (
            "limits: {ping_timeout: .inf}\n",
            "limits.ping_timeout: expected a finite number, got inf",
        ),
        ("server: [1, 2]\n", "server: expected a mapping, got a list"),
        ("rooms: {name: '#a'}\n", "rooms: expected a list, got a mapping"),
        ("rooms: ['#a']\n", "rooms[0]: expected a mapping, got '#a'"),
        ("log: {level: null}\n", "log.level: expected a string, got null"),
        (
            "server: {port: 7000}\nmetrics: {listen: '127.0.0.1:7000'}\n",
            "metrics.listen: its port must differ from server.port (both are 7000)",
        ),
        (
            "websocket: {port: 8097}\nmetrics: {listen: '127.0.0.1:8097'}\n",
            "metrics.listen: its port must differ from websocket.port (both are 8097)",
        ),
        (
            "websocket: {tls: true}\n",
            "websocket.tls: needs the tls: section (its certificate and key)",
        ),
        (
            "websocket: {origins: [chat.example]}\n",
            "websocket.origins[0]: expected an origin such as https://chat.example, or *, "
            "got 'chat.example'",
        ),
        (
            "websocket: {proxies: [nginx]}\n",
            "websocket.proxies[0]: expected an IP address or network such as 10.0.0.0/8, "
            "got 'nginx'",
        ),
        ("log_level: DEBUG\n", "log_level: moved to log.level (write `log: {level: DEBUG}`)"),
        ("log: {format: xml}\n", "log.format: must be one of text, json, got 'xml'"),
        ("log: {file: ''}\n", "log.file: must not be empty (null logs to stderr)"),
        (
            "log: {file: /no/such/dir/x.log}\n",
            "log.file: its folder does not exist: '/no/such/dir' (make it first)",
        ),
        ("metrics: {listen: 9108}\n", "metrics.listen: expected a string, got 9108 (quote it)"),
        (
            "metrics: {listen: '::1:9108'}\n",
            LISTEN_MESSAGE + "'::1:9108'",
        ),
        (
            "metrics: {listen: 'localhost:99999'}\n",
            LISTEN_MESSAGE + "'localhost:99999'",
        ),
        (
            "metrics: {listen: ':9108'}\n",
            LISTEN_MESSAGE + "':9108'",
        ),
        # bool is not an int
        ("server: {port: true}\n", "server.port: expected an integer, got true"),
        ("limits: {ping_timeout: false}\n", "limits.ping_timeout: expected a number, got false"),
        # unknown keys, top level and nested
        ("colour: blue\n", "colour: unknown key"),
        ("server: {colour: blue}\n", "server.colour: unknown key"),
        ("rooms: [{name: '#a', colour: blue}]\n", "rooms[0].colour: unknown key"),
        ("1: x\n", "1: unknown key"),
        # missing required key
        ("rooms: [{topic: hi}]\n", "rooms[0].name: required key is missing"),
        # bad room names
        ("rooms: [{name: '#a'}, {name: general}]\n", "rooms[1].name: room names start with '#'"),
        (
            "rooms: [{name: '#'}]\n",
            "rooms[0].name: room names need at least one character after '#'",
        ),
        (
            "rooms: [{name: '#a b'}]\n",
            (
                "rooms[0].name: room names may not contain spaces, commas, colons or control "
                "characters, got '#a b'"
            ),
        ),
        (
            "rooms: [{name: '#a,b'}]\n",
            (
                "rooms[0].name: room names may not contain spaces, commas, colons or control "
                "characters, got '#a,b'"
            ),
        ),
        (
            'rooms: [{name: "#a\\x07"}]\n',
            (
                "rooms[0].name: room names may not contain spaces, commas, colons or control "
                "characters, got '#a\\x07'"
            ),
        ),
        (
            "limits: {room_length: 5}\nrooms: [{name: '#toolong'}]\n",
            "rooms[0].name: room names may be at most 5 characters (limits.room_length), got 8",
        ),
        (
            "limits: {topic_length: 3}\nrooms: [{name: '#a', topic: long}]\n",
            "rooms[0].topic: topics may be at most 3 characters (limits.topic_length), got 4",
        ),
        (
            'rooms: [{name: "#a", topic: "x\\ny"}]\n',
            "rooms[0].topic: must not contain line breaks or NUL",
        ),
        # duplicate rooms, also under IRC casefolding
        (
            "rooms: [{name: '#general'}, {name: '#help'}, {name: '#general'}]\n",
            "rooms[2].name: duplicate room '#general' (same as rooms[0])",
        ),
        (
            "rooms: [{name: '#General'}, {name: '#GENERAL'}]\n",
            "rooms[1].name: duplicate room '#GENERAL' (same as rooms[0])",
        ),
        # out of range
        ("server: {port: 70000}\n", "server.port: must be between 0 and 65535, got 70000"),
        ("server: {port: -1}\n", "server.port: must be between 0 and 65535, got -1"),
        ("server: {sender_threads: 0}\n", "server.sender_threads: must be at least 1, got 0"),
        (
            "limits: {max_line_bytes: 100}\n",
            "limits.max_line_bytes: must be between 512 and 8192, got 100",
        ),
        ("limits: {sendq_bytes: 4095}\n", "limits.sendq_bytes: must be at least 4096, got 4095"),
        ("limits: {ping_timeout: 0}\n", "limits.ping_timeout: must be greater than 0, got 0"),
        (
            "limits: {registration_timeout: -0.5}\n",
            "limits.registration_timeout: must be greater than 0, got -0.5",
        ),
        ("limits: {nick_length: 0}\n", "limits.nick_length: must be between 1 and 200, got 0"),
        ("limits: {room_length: 1}\n", "limits.room_length: must be between 2 and 200, got 1"),
        (
            "limits: {topic_length: 401}\n",
            "limits.topic_length: must be between 1 and 400, got 401",
        ),
        ("limits: {away_length: 0}\n", "limits.away_length: must be between 1 and 400, got 0"),
        (
            "limits: {max_line_bytes: 1024, read_buffer_bytes: 600}\n",
            "limits.read_buffer_bytes: must be at least max_line_bytes (1024), got 600",
        ),
        # names that go into protocol lines
        (
            "server: {name: 'irc example'}\n",
            "server.name: must not contain spaces or control characters, got 'irc example'",
        ),
        ("server: {network: ''}\n", "server.network: must not be empty"),
        (
            "server: {password: ''}\n",
            "server.password: must not be empty (use null for an open server)",
        ),
        # log level
        (
            "log: {level: verbose}\n",
            "log.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'VERBOSE'",
        ),
        # file-level problems
        ("- a\n- b\n", "the top level must be a mapping of settings, got a list"),
        ("just text\n", "the top level must be a mapping of settings, got 'just text'"),
        (
            "server:\n  port: 1\n    host: x\n",
            "not valid YAML (line 3, column 9: mapping values are not allowed here)",
        ),
        (
            "rooms: [\n",
            "not valid YAML (line 2, column 1: "
            "expected the node content, but found '<stream end>')",
        ),
        (
            "server:\n  port: 1\n  port: 2\n",
            "not valid YAML (line 3, column 3: duplicate key 'port')",
        ),
    ],
)
def test_error_messages(tmp_path: Path, text: str, message: str) -> None:
    assert load_error(tmp_path, text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A number in quotes is a string to YAML: the fix is to drop the quotes.
        (
            'limits: {ping_interval: "60"}\n',
            "limits.ping_interval: expected a number, got '60' (write it without quotes)",
        ),
        (
            "limits: {ping_timeout: '2.5'}\n",
            "limits.ping_timeout: expected a number, got '2.5' (write it without quotes)",
        ),
        (
            "server: {port: '6667'}\n",
            "server.port: expected an integer, got '6667' (write it without quotes)",
        ),
        # ... but only when dropping them would be enough.
        ("server: {port: '66 67'}\n", "server.port: expected an integer, got '66 67'"),
        ("server: {port: '6667.5'}\n", "server.port: expected an integer, got '6667.5'"),
        ("limits: {ping_timeout: '.inf'}\n", "limits.ping_timeout: expected a number, got '.inf'"),
        ("limits: {ping_timeout: 'true'}\n", "limits.ping_timeout: expected a number, got 'true'"),
        # A number, true/false or a date where text is expected: quoting makes it text.
        ("server: {network: 2024}\n", "server.network: expected a string, got 2024 (quote it)"),
        (
            "rooms: [{name: '#a', topic: 1.5}]\n",
            "rooms[0].topic: expected a string, got 1.5 (quote it)",
        ),
        ("server: {network: yes}\n", "server.network: expected a string, got true (quote it)"),
        (
            "server: {motd: 2024-05-01}\n",
            "server.motd: expected a string or null, got 2024-05-01 (quote it)",
        ),
        # No quoting fixes a list or a mapping.
        ("server: {name: [a]}\n", "server.name: expected a string, got a list"),
        ("server: {port: {a: 1}}\n", "server.port: expected an integer, got a mapping"),
    ],
)
def test_type_errors_say_when_quotes_are_the_fix(tmp_path: Path, text: str, message: str) -> None:
    assert load_error(tmp_path, text) == message


def test_error_carries_its_parts(tmp_path: Path) -> None:
    path = write_config(tmp_path, "limits: {sendq_bytes: abc}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert info.value.key_path == "limits.sendq_bytes"
    assert info.value.problem == "expected an integer, got 'abc'"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read the file (No such file or directory)"


def test_invalid_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"server: {name: \xff}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not valid UTF-8 (byte 15)"


def test_parse_config_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"server": {"port": "x"}}, source="test-dict")
    assert str(info.value) == "test-dict: server.port: expected an integer, got 'x'"
    with pytest.raises(ConfigError) as info:
        parse_config([1])
    assert str(info.value) == "<config>: the top level must be a mapping of settings, got a list"


# --- overrides ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "host", "port", "log_level"),
    [
        ({}, "127.0.0.1", 6667, "INFO"),
        ({"host": "0.0.0.0"}, "0.0.0.0", 6667, "INFO"),
        ({"port": 0}, "127.0.0.1", 0, "INFO"),
        ({"log_level": "debug"}, "127.0.0.1", 6667, "DEBUG"),
        ({"host": "::1", "port": 7000, "log_level": "Error"}, "::1", 7000, "ERROR"),
    ],
)
def test_with_overrides(overrides: dict, host: str, port: int, log_level: str) -> None:
    base = parse_config({"rooms": [{"name": "#a"}], "limits": {"nick_length": 9}})
    config = base.with_overrides(**overrides)
    assert (config.server.host, config.server.port, config.log.level) == (host, port, log_level)
    # Everything not overridden is carried over, and the original is untouched.
    assert config.rooms == base.rooms
    assert config.limits == base.limits
    assert base.server == ServerConfig()
    assert base.log.level == "INFO"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 70000}, "command line: --port: must be between 0 and 65535, got 70000"),
        ({"port": True}, "command line: --port: expected an integer, got true"),
        (
            {"host": "a b"},
            "command line: --host: must not contain spaces or control characters, got 'a b'",
        ),
        (
            {"log_level": "loud"},
            (
                "command line: --log-level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
                "got 'LOUD'"
            ),
        ),
    ],
)
def test_with_overrides_validates(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        default_config().with_overrides(**overrides)
    assert str(info.value) == message


# --- cluster (issue 17) ---------------------------------------------------------------------

REDIS = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cluster: null\n", None),
        ("cluster:\n", None),
        (f"cluster: {{redis: '{REDIS}'}}\n", ClusterConfig(redis=REDIS)),
        (
            "cluster:\n  redis: rediss://:s3cret@redis.example:6380/2\n  node: eu-1.b_2\n"
            "  lease_ms: 1000\n  timeout_ms: 60000\n  prefix: chat.test\n",
            ClusterConfig(
                "rediss://:s3cret@redis.example:6380/2", "eu-1.b_2", 1000, 60000, "chat.test"
            ),
        ),
        (
            "cluster:\n  redis: unix:///run/redis/redis.sock?db=1\n"
            "  lease_ms: 600000\n  timeout_ms: 100\n",
            ClusterConfig("unix:///run/redis/redis.sock?db=1", lease_ms=600000, timeout_ms=100),
        ),
        (f"cluster: {{redis: '{REDIS}', node: {'n' * 32}}}\n", ClusterConfig(REDIS, "n" * 32)),
    ],
)
def test_valid_cluster_sections(tmp_path: Path, text: str, expected: ClusterConfig | None) -> None:
    assert load_config(write_config(tmp_path, text)).cluster == expected


WORD_PROBLEM = "must be 1 to 32 letters, digits, '.', '-' or '_', got "
URL_PROBLEM = (
    "expected a URL starting redis://, rediss:// or unix://, such as redis://127.0.0.1:6379/0, got "
)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{}", "cluster.redis: required key is missing"),
        ("{node: a}", "cluster.redis: required key is missing"),
        ("{redis: null}", "cluster.redis: expected a string, got null"),
        ("{redis: 6379}", "cluster.redis: expected a string, got 6379 (quote it)"),
        ("{redis: '127.0.0.1:6379'}", f"cluster.redis: {URL_PROBLEM}'127.0.0.1:6379'"),
        ("{redis: 'Redis://h'}", f"cluster.redis: {URL_PROBLEM}'Redis://h'"),
        # The password a URL carries is never quoted: the line goes to the log.
        ("{redis: 'http://:hunter2@h'}", f"cluster.redis: {URL_PROBLEM}'http://:***@h'"),
        (
            "{redis: 'redis://h /0'}",
            "cluster.redis: must not contain spaces or control characters, got 'redis://h /0'",
        ),
        (
            "{redis: 'redis://h:abc/0'}",
            "cluster.redis: not a valid URL (Port could not be cast to integer value as 'abc'), "
            "got 'redis://h:abc/0'",
        ),
        (
            "{redis: 'redis://h:70000'}",
            "cluster.redis: not a valid URL (Port out of range 0-65535), got 'redis://h:70000'",
        ),
        (
            "{redis: 'unix://'}",
            "cluster.redis: needs the socket's path, such as unix:///run/redis/redis.sock, "
            "got 'unix://'",
        ),
        (f"{{redis: '{REDIS}', node: ''}}", f"cluster.node: {WORD_PROBLEM}''"),
        (f"{{redis: '{REDIS}', node: 'a b'}}", f"cluster.node: {WORD_PROBLEM}'a b'"),
        (f"{{redis: '{REDIS}', node: 'a:b'}}", f"cluster.node: {WORD_PROBLEM}'a:b'"),
        (f"{{redis: '{REDIS}', node: 'nœud'}}", f"cluster.node: {WORD_PROBLEM}'nœud'"),
        (f"{{redis: '{REDIS}', node: {'n' * 33}}}", f"cluster.node: {WORD_PROBLEM}'{'n' * 33}'"),
        (
            f"{{redis: '{REDIS}', node: 7}}",
            "cluster.node: expected a string or null, got 7 (quote it)",
        ),
        (
            f"{{redis: '{REDIS}', lease_ms: 999}}",
            "cluster.lease_ms: must be between 1000 and 600000, got 999",
        ),
        (
            f"{{redis: '{REDIS}', lease_ms: 600001}}",
            "cluster.lease_ms: must be between 1000 and 600000, got 600001",
        ),
        (
            f"{{redis: '{REDIS}', lease_ms: 10s}}",
            "cluster.lease_ms: expected an integer, got '10s'",
        ),
        (
            f"{{redis: '{REDIS}', timeout_ms: 99}}",
            "cluster.timeout_ms: must be between 100 and 60000, got 99",
        ),
        (
            f"{{redis: '{REDIS}', timeout_ms: 60001}}",
            "cluster.timeout_ms: must be between 100 and 60000, got 60001",
        ),
        (
            f"{{redis: '{REDIS}', timeout_ms: '5000'}}",
            "cluster.timeout_ms: expected an integer, got '5000' (write it without quotes)",
        ),
        (f"{{redis: '{REDIS}', prefix: ''}}", f"cluster.prefix: {WORD_PROBLEM}''"),
        (f"{{redis: '{REDIS}', prefix: 'a:b'}}", f"cluster.prefix: {WORD_PROBLEM}'a:b'"),
        (f"{{redis: '{REDIS}', prefix: '{{x}}'}}", f"cluster.prefix: {WORD_PROBLEM}'{{x}}'"),
        (f"{{redis: '{REDIS}', shards: 3}}", "cluster.shards: unknown key"),
        ("[redis]", "cluster: expected a mapping, got a list"),
    ],
)
def test_cluster_errors_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    assert load_error(tmp_path, f"cluster: {section}\n") == message


def test_a_cluster_keeps_no_store_file(tmp_path: Path) -> None:
    text = f"cluster: {{redis: '{REDIS}'}}\nstore: {{path: ircish.db}}\n"
    assert load_error(tmp_path, text) == (
        "store.path: must be null with cluster: (in a cluster, history, accounts and "
        "permanent rooms are kept in Redis, at cluster.redis)"
    )
    # Without the file, the rest of the store section is fine.
    text = f"cluster: {{redis: '{REDIS}'}}\nstore: {{path: null, flush_ms: 10}}\n"
    assert load_config(write_config(tmp_path, text)).store.flush_ms == 10


def test_the_node_is_named_after_the_server_unless_told() -> None:
    config = parse_config({"server": {"name": "irc.example.org"}, "cluster": {"redis": REDIS}})
    assert config.cluster is not None and config.cluster.node is None
    assert config.node_name == "irc.example.org"
    config = parse_config(
        {"server": {"name": "irc.example.org"}, "cluster": {"redis": REDIS, "node": "b"}}
    )
    assert config.node_name == "b"
    # A single process: the network's one node, named after the server too.
    assert parse_config({"server": {"name": "solo"}}).node_name == "solo"


def test_a_server_name_that_cannot_name_a_node_needs_cluster_node() -> None:
    data = {"server": {"name": "irc:example"}, "cluster": {"redis": REDIS}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "f.yaml")
    assert str(info.value) == (
        "f.yaml: cluster.node: must be given: server.name ('irc:example') cannot name the node "
        "(1 to 32 letters, digits, '.', '-' or '_')"
    )
    data["cluster"]["node"] = "irc-example"
    assert parse_config(data).node_name == "irc-example"


def test_the_redis_url_stays_out_of_reprs_and_its_password_out_of_descriptions() -> None:
    url = "redis://ircish:hunter2@redis.example:6379/0"
    config = Config(cluster=ClusterConfig(url, node="a"))
    assert "hunter2" not in repr(config)
    assert "node='a'" in repr(config)
    # A reload names the value a restart-only setting keeps (leaving a cluster, or moving it).
    assert describe_setting(config.cluster.redis) == "redis://ircish:***@redis.example:6379/0"
    assert "hunter2" not in describe_setting(config.cluster)
    assert describe_setting("https://chat.example") == "https://chat.example"


def test_joining_or_leaving_a_cluster_needs_a_restart_but_its_timeout_reloads() -> None:
    single = Config()
    cluster = Config(cluster=ClusterConfig(REDIS))
    assert changed_settings(single, cluster) == ["cluster"]
    assert changed_settings(cluster, single) == ["cluster"]
    assert "cluster" in RESTART_ONLY
    moved = Config(cluster=ClusterConfig("redis://other:6379/0", "n", 20000, 100, "other"))
    changed = changed_settings(cluster, moved)
    assert changed == [
        "cluster.redis",
        "cluster.node",
        "cluster.lease_ms",
        "cluster.timeout_ms",
        "cluster.prefix",
    ]
    assert [path for path in changed if path not in RESTART_ONLY] == ["cluster.timeout_ms"]


def commented_cluster_example() -> str:
    """examples/config.yaml with its commented-out `cluster:` section turned on."""
    text = EXAMPLE.read_text(encoding="utf-8")
    lines = text.splitlines()
    start = lines.index("# cluster:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line.removeprefix("# "))
    return text.replace("\ncluster: null\n", "\n" + "\n".join(block) + "\n")


def test_the_example_cluster_section_shows_every_key_and_works_once_uncommented(
    tmp_path: Path,
) -> None:
    text = commented_cluster_example()
    section = yaml.safe_load(text)["cluster"]
    assert set(section) == {f.name for f in dataclasses.fields(ClusterConfig)}
    # The example keeps a store file, which a cluster cannot have yet: its comment says so.
    assert load_error(tmp_path, text).startswith("store.path: must be null with cluster:")
    text = text.replace("\n  path: ircish.db\n", "\n  path: null\n")
    config = load_config(write_config(tmp_path, text))
    assert config.cluster == ClusterConfig(REDIS)
    assert config.node_name == config.server.name


# --- frozen ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "attribute", "value"),
    [
        (Config(), "log", LogConfig(level="DEBUG")),
        (ServerConfig(), "port", 1),
        (Limits(), "max_clients", 1),
        (RoomConfig("#a"), "topic", "x"),
        (OperatorConfig("alice", HASH), "hosts", ("10.*",)),
    ],
)
def test_config_objects_are_frozen(obj: object, attribute: str, value: object) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, attribute, value)
    assert getattr(obj, attribute) != value
