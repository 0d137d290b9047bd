"""Profile ircish under load: py-spy samples the server during a scenario's window.

    python bench/profile.py                      # fanout, 200 members, 10 senders, max rate
    python bench/profile.py --scenario dm        # 200 pairs of private chats
    python bench/profile.py --members 1000 --mode fixed --rate 300

Needs `pip install py-spy` (and ptrace rights: root, or CAP_SYS_PTRACE). py-spy attaches
to the running server for exactly the measurement window, with `--gil` (only the thread
holding the GIL is sampled, i.e. where the server's Python time goes) and
`--nonblocking` (the server is not paused to sample). The summary splits the samples by
thread role (reader / sender / poller / other), then lists the functions with the most
self time and the most inclusive time, each also as µs of server CPU per delivery.
The raw collapsed stacks (`bench/results/profile-*.txt`) load into speedscope.app or
flamegraph.pl; `--speedscope` writes a speedscope JSON file instead.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import scenarios  # noqa: E402
import servers  # noqa: E402

ROLES = (
    ("_read_loop", "reader"),
    ("_drain_loop", "sender"),
    ("_poll_loop", "poller"),
    ("_accept_loop", "accept"),
    ("_housekeeping", "housekeeping"),
)


def parse_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`: one entry per function, not line."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({file.split('/')[-1]})" if file else name


def summarise(stacks: list[tuple[list[str], int]], us_per_delivery: float | None) -> str:
    total = sum(count for _, count in stacks) or 1
    roles: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        role = next((r for marker, r in ROLES if any(marker in f for f in frames)), "other")
        roles[role] += count
        names = [short(f) for f in frames if not f.startswith(("process ", "thread "))]
        names = [n for n in names if n]
        if names:
            self_time[names[-1]] += count
        for name in set(names):
            inclusive[name] += count

    def cost(count: int) -> str:
        share = count / total
        if us_per_delivery is None:
            return f"{100 * share:5.1f}%"
        return f"{100 * share:5.1f}%  {share * us_per_delivery:6.3f} µs"

    lines = [f"{total} samples"]
    if us_per_delivery is not None:
        lines.append(f"server CPU per delivery: {us_per_delivery:.3f} µs")
    lines += ["", "by thread role:"]
    lines += [f"  {cost(count)}  {role}" for role, count in roles.most_common()]
    lines += ["", "top self time:"]
    lines += [f"  {cost(count)}  {name}" for name, count in self_time.most_common(25)]
    lines += ["", "top inclusive time (ircish and commands code):"]
    ours = [
        (name, count)
        for name, count in inclusive.most_common()
        if any(part in name for part in ("(connection.py", "(world.py", "(dispatch.py"))
        or any(part in name for part in ("(protocol.py", "(messages.py", "(server.py"))
    ]
    lines += [f"  {cost(count)}  {name}" for name, count in ours[:25]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("fanout", "dm"), default="fanout")
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--mode", choices=("max", "fixed"), default="max")
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--measure", type=float, default=6.0)
    parser.add_argument("--sample-rate", type=int, default=250, help="py-spy samples/s")
    parser.add_argument("--sender-threads", type=int)
    parser.add_argument(
        "--server",
        choices=servers.IRCISH_KINDS,
        default="ircish",
        help="ircish with history off, with the store on disk (issue 13), with accounts "
        "(issue 14), or with metrics on (issue 15: every command timed; nothing scrapes)",
    )
    parser.add_argument("--ircish-rev", help="profile ircish as committed at this git revision")
    parser.add_argument("--speedscope", action="store_true", help="write speedscope JSON too")
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        parser.error("py-spy not found: pip install py-spy")
    servers.raise_file_limit()
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    raw = out_dir / f"profile-{args.scenario}-{stamp}.txt"
    workdir = Path(tempfile.mkdtemp(prefix="ircish-profile-"))
    source = None
    if args.ircish_rev:
        source = servers.export_revision(args.ircish_rev, workdir / "src")
    server = servers.start_server(
        args.server,
        servers.free_port(),
        workdir,
        sender_threads=args.sender_threads,
        ircish_dir=source,
        # ircish-accounts: an account per client, named as the scenario names them.
        accounts=(
            scenarios.nicks(
                "p" if args.scenario == "dm" else "f",
                2 * args.pairs if args.scenario == "dm" else args.members,
            )
            if args.server in servers.ACCOUNT_KINDS
            else None
        ),
    )
    recorders: list[subprocess.Popen] = []

    def attach(seconds: float) -> None:
        formats = [("raw", raw)]
        if args.speedscope:
            formats.append(("speedscope", raw.with_suffix(".speedscope.json")))
        for fmt, path in formats:
            command = [
                spy,
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                str(args.sample_rate),
                "--gil",
                "--nonblocking",
                "--format",
                fmt,
                "--output",
                str(path),
            ]
            recorders.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )

    try:
        common = {"measure": args.measure, "warmup": 1.0, "on_window": attach}
        if args.scenario == "fanout":
            result = scenarios.fanout(
                server,
                "p",
                members=args.members,
                senders=args.senders,
                mode=args.mode,
                rate=args.rate,
                **common,
            )
            deliveries = result.get("deliveries_per_s")
            per = result.get("server_us_per_delivery")
        else:
            result = scenarios.dm(server, "p", pairs=args.pairs, **common)
            deliveries = result.get("msgs_per_s")
            per = result.get("server_us_per_msg")
        for recorder in recorders:
            try:
                _, err = recorder.communicate(timeout=args.measure + 60)
            except subprocess.TimeoutExpired:
                recorder.kill()  # our own py-spy child
                _, err = recorder.communicate()
            if recorder.returncode:
                print(f"py-spy failed ({recorder.returncode}): {err.decode()[-500:]}")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{args.scenario}: {deliveries} deliveries/s, server {result.get('server_cpu_cores')} "
        f"cores, generator {result.get('gen_cpu_cores')} cores, p99 {result.get('p99_ms')} ms"
    )
    if not raw.exists():
        print("no profile written")
        return 1
    summary = summarise(parse_collapsed(raw), per)
    summary_path = raw.with_suffix(".summary.txt")
    summary_path.write_text(summary + "\n")
    print(summary)
    print(f"\nraw stacks: {raw}\nsummary: {summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
