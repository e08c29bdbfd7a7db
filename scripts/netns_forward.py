"""Make the host's loopback reachable from an engine in a network namespace of its own.

usage: netns_forward.py PID PORT

Listens on 127.0.0.1:PORT inside the network namespace of process PID (an engine container's
first process), where scripts/engine redirects the namespace's connections to other loopback
ports (iptables REDIRECT); each is connected, from the host's namespace, to the same port on
the host's 127.0.0.1: a registry a test starts on a random loopback port is then as reachable
for that engine as for the one on the host's network. Runs until killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import sys
import threading

CLONE_NEWNET = 0x40000000
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h


def setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends, then end ``dst``'s sending side only (the
    answer may still be on its way back)."""
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def serve(conn: socket.socket) -> None:
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        conn.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=pipe, args=(upstream, conn), daemon=True)
    back.start()
    pipe(conn, upstream)
    back.join()
    conn.close()
    upstream.close()


def main() -> int:
    pid, port = sys.argv[1], int(sys.argv[2])
    home = f"/proc/{os.getpid()}/ns/net"
    home_fd = os.open(home, os.O_RDONLY)  # kept: the way back
    setns(f"/proc/{pid}/ns/net")
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    setns(f"/proc/self/fd/{home_fd}")  # sockets made from here on live in the host's namespace
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
