"""Out of file descriptors: the accept loop waits instead of spinning, then recovers."""

from __future__ import annotations

import os
import resource
import select
import time

from helpers import Client

from ircish.connection import GREETING_DELAY

#: The server's whole descriptor budget: a few for itself, the rest for clients.
FD_LIMIT = 40


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def greeted(clients: list[Client], settle: float = GREETING_DELAY + 1.5) -> set[Client]:
    """Clients whose greeting arrived (a silent connection is greeted after GREETING_DELAY);
    stop once none has arrived for `settle` s."""
    got: set[Client] = set()
    while True:
        waiting = [c for c in clients if c not in got]
        ready, _, _ = select.select([c.sock for c in waiting], [], [], settle)
        if not ready:
            return got
        got.update(c for c in waiting if c.sock in ready)


def test_accept_survives_emfile_and_recovers(server_process):
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

    server = server_process(
        "limits:\n  max_clients: 1000\n  max_clients_per_ip: 0\n",
        log_level="WARNING",
        preexec_fn=low_limit,
    )
    clients: list[Client] = []
    try:
        # More clients than descriptors: the rest wait in the listen backlog.
        clients += [Client(server.address) for _ in range(FD_LIMIT + 1)]
        accepted = greeted(clients)
        waiting = [c for c in clients if c not in accepted]
        assert accepted and waiting

        # Waiting for descriptors must not spin: well under half a core.
        before, start = cpu_seconds(server.proc.pid), time.monotonic()
        select.select([], [], [], 1.0)  # the measured interval itself
        used = cpu_seconds(server.proc.pid) - before
        assert used / (time.monotonic() - start) < 0.5

        # Free descriptors: the first waiting client is accepted and registers.
        for client in accepted:
            client.close()
        waiting[0].register("late")
        assert waiting[0].sync() == []
    finally:
        for client in clients:
            client.close()
    assert server.stop() == 0
    log = server.log()
    # Said once per shortage (there may be a second one as the backlog drains),
    # not at every 0.1 s retry over the second it lasted; the recovery is said too.
    warnings = log.count("accept: Too many open files; pausing before accepting again")
    assert 1 <= warnings <= 3
    assert "accept: descriptors are free again; accepting" in log
