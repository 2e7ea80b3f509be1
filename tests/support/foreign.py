"""A client of another uid, for the peer-credential checks (root only)."""

from __future__ import annotations

import os
import socket

__all__ = ["NOBODY", "talk_as_nobody"]

NOBODY = 65534


def talk_as_nobody(path: str, payloads: list[bytes]) -> bytes:
    """Connect to the Unix socket ``path`` as uid/gid 65534 from a forked child, send each
    payload, read until the daemon closes (or 5 s pass); returns ``b"OK" + reply`` or
    ``b"EX" + repr(exception)`` when the child could not even connect."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            data = b""
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(path)
                for payload in payloads:
                    try:  # the daemon may refuse and close before we even send: that is fine
                        sock.sendall(payload)
                    except OSError:
                        break
                try:
                    while chunk := sock.recv(65536):
                        data += chunk
                except OSError:
                    pass
            os.write(write_end, b"OK" + data)
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            os.write(write_end, b"EX" + repr(exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    out = b""
    while chunk := os.read(read_end, 65536):
        out += chunk
    os.close(read_end)
    os.waitpid(child, 0)
    return out
