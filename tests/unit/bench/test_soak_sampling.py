"""``bench soak``'s process sampling from /proc text: which processes are the platform's and
what each is called, and the connections to the stores counted from the TCP table; and the
load's pacer."""

from __future__ import annotations

import os

from snapshoe.bench import soak_sampling as ss
from snapshoe.bench.soak_load import Pacer

PY = "/work/main/.venv/bin/python"


def test_labels_from_command_lines() -> None:
    assert ss.own_label([PY, "-m", "snapshoe.cli", "up", "--no-seed"]) == "up"
    assert ss.own_label([PY, "-m", "snapshoe.cli", "serve", "orders"]) == "orders"
    assert ss.own_label([PY, "-m", "snapshoe.cli", "worker", "orders"]) == "orders-worker"
    assert ss.own_label(["/work/main/.venv/bin/snapshoe", "serve", "web"]) == "web"
    assert ss.own_label(["/usr/sbin/haproxy", "-db", "-f", "x.cfg"]) == "gateway"
    # Other snapshoe commands (this bench among them) and other programs are not the platform.
    assert ss.own_label([PY, "-m", "snapshoe.cli", "bench", "soak"]) is None
    assert ss.own_label(["/work/main/.venv/bin/snapshoe", "doctor"]) is None
    assert ss.own_label(["/usr/sbin/mariadbd"]) is None
    assert ss.own_label([]) is None


def test_label_processes_children_and_namesakes() -> None:
    spawn = [PY, "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"]
    procs = {
        "100": ("1", [PY, "-m", "snapshoe.cli", "up"]),
        "110": ("100", [PY, "-m", "snapshoe.cli", "serve", "orders"]),
        "111": ("100", [PY, "-m", "snapshoe.cli", "worker", "orders"]),
        "130": ("110", spawn),
        "120": ("110", spawn),
        "140": ("100", ["/usr/sbin/haproxy", "-db"]),
        "141": ("100", ["/usr/sbin/haproxy", "-db"]),
        "200": ("1", ["/usr/bin/bash"]),
        "201": ("200", [PY, "-m", "snapshoe.cli", "bench", "soak"]),
        "300": ("1", [PY, "-m", "snapshoe.cli", "serve", "users"]),  # another namespace
    }
    keep = {p for p in procs if p != "300"}
    assert ss.label_processes(procs, keep) == {
        "100": "up",
        "110": "orders",
        "111": "orders-worker",
        "120": "orders.1",
        "130": "orders.2",
        "140": "gateway",
        "141": "gateway-2",
    }


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5001 1
   1: 0100007F:D6D8 0100007F:0CEA 01 00000000:00000000 00:00000000 00000000  1000        0 5002 1
   2: 0100007F:D6DA 0100007F:18EB 01 00000000:00000000 00:00000000 00000000  1000        0 5003 1
   3: 0100007F:D6DC 0100007F:1628 01 00000000:00000000 00:00000000 00000000  1000        0 5004 1
   4: 0100007F:D6DE 0100007F:0CEA 06 00000000:00000000 00:00000000 00000000  1000        0 5005 1
   5: 0100007F:D6E0 0100007F:1F40 01 00000000:00000000 00:00000000 00000000  1000        0 5006 1
"""


def test_tcp_table_established_connections_to_the_stores() -> None:
    # 0x0CEA = 3306, 0x18EB = 6379, 0x1628 = 5672; a listener, a TIME_WAIT and a connection
    # to another port are left out.
    assert ss.parse_tcp_table(TCP) == {5002: "mariadb", 5003: "redis", 5004: "rabbitmq"}


def test_count_connections_by_fd_inode() -> None:
    sockets = {5002: "mariadb", 5003: "redis", 5007: "mariadb"}
    fds = ["/dev/null", "socket:[5002]", "socket:[5007]", "socket:[5003]", "socket:[9999]"]
    assert ss.count_connections(fds, sockets) == {"mariadb": 2, "redis": 1, "rabbitmq": 0}


def test_snapshot_of_no_platform_is_empty() -> None:
    assert ss.snapshot("no_such_namespace_x") == {}


def test_this_process_is_never_the_platform() -> None:
    assert str(os.getpid()) not in ss.platform_processes("snapshoe", me=os.getpid())


def test_pacer_spaces_slots_and_does_not_save_them_up() -> None:
    p = Pacer(10)
    p.next = 100.0
    assert p.reserve(100.0) == 100.0
    assert p.reserve(100.0) == 100.1
    assert round(p.reserve(100.05), 3) == 100.2
    # Late (every worker was busy): the next slot is now, not a burst of the missed ones.
    assert p.reserve(105.0) == 105.0
    assert round(p.reserve(105.0), 3) == 105.1
