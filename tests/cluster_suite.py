"""What the single-node suite is not expected to show against a network of nodes
(IRCISH_TEST_CLUSTER, tests/network.py), test by test, each with its reason. A test is
named `module::test` (every parameter) or `module::test[parameter]`.

- SINGLE_NODE: the test looks at one process (its connection count, its own copy of the
  world, a per-process limit): skipped, it says nothing about a network.
- SERVER_BUGS: what the network gets wrong today: expected to fail (xfail), so the rest
  of the run stays a clean signal. `strict` when it fails every time: once fixed, the
  test passes and the run says so (XPASS(strict)), and the entry goes. Run them as plain
  tests with `pytest --runxfail`.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest


class Bug(NamedTuple):
    reason: str
    #: Fails every run (not a race that a fast machine may win).
    strict: bool = True


_CONNECTIONS = "waits for server.connection_count(), one process's connections"
_LUSERS = "LUSERS' local counts (255, 265) are one node's, and connection_count() one process's"
_SQLITE = "reads or fills the SQLite file itself; in a cluster the store is Redis"

SINGLE_NODE: dict[str, str] = {
    "test_rooms.py::test_list_filters_by_creation_and_topic_time_in_minutes": (
        "sets the first node's room clocks back (server.world); LIST on another node reads "
        "its own copy"
    ),
    "test_messages.py::test_quit_is_relayed_once_and_frees_the_nick": _CONNECTIONS,
    "test_messages.py::test_vanished_client_is_removed_and_its_nick_freed": _CONNECTIONS,
    "test_registration.py::test_max_clients": "limits.max_clients is per process",
    "test_registration.py::test_max_clients_per_ip": "limits.max_clients_per_ip is per process",
    "test_websocket.py::test_loading_the_page_never_competes_with_chat_connections": (
        "limits.max_clients_per_ip is per process"
    ),
    "test_queries.py::test_lusers_counts": _LUSERS,
    "test_user_queries.py::test_lusers_counts_current_and_peak_users": _LUSERS,
    "test_user_queries.py::test_welcome_burst_counts_the_newcomer": _LUSERS,
    "test_history.py::test_max_age_hides_older_lines_and_the_writer_deletes_them": _SQLITE,
    "test_history.py::test_a_replayed_line_shows_the_time_it_was_said": _SQLITE,
    "test_history.py::test_a_read_never_waits_for_nor_fails_on_the_writers_transaction": _SQLITE,
    "test_accounts.py::test_accounts_survive_a_restart": (
        "shuts one server down and starts another on its SQLite file; a network that "
        "restarts from Redis is tests/test_cluster.py's"
    ),
}

SERVER_BUGS: dict[str, Bug] = {}


def unknown_names(items: list[pytest.Item]) -> list[str]:
    """The names above whose module is being run and has no such test function (a test
    renamed, a key mistyped): such an entry would silently mark nothing. (A parameter is
    not checked: a run of one test id collects only that one.)"""
    modules = {item.path.name: getattr(item, "module", None) for item in items}
    unknown = []
    for name in (*SINGLE_NODE, *SERVER_BUGS):
        module, _, test = name.partition("::")
        if module in modules and not hasattr(modules[module], test.partition("[")[0]):
            unknown.append(name)
    return sorted(unknown)


def cluster_mark(item: pytest.Item) -> pytest.MarkDecorator | None:
    """The skip or xfail `item` gets in cluster mode, if any."""
    base = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
    for key in (f"{item.path.name}::{item.name}", base):
        if key in SERVER_BUGS:
            bug = SERVER_BUGS[key]
            return pytest.mark.xfail(reason=f"cluster bug: {bug.reason}", strict=bug.strict)
        reason = SINGLE_NODE.get(key)
        if reason is not None:
            return pytest.mark.skip(reason=f"cluster mode: {reason}")
    marker = item.get_closest_marker("single_node")
    if marker is not None:
        reason = marker.args[0] if marker.args else "needs one server process"
        return pytest.mark.skip(reason=f"cluster mode: {reason}")
    return None
