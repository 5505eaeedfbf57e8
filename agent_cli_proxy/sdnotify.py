"""systemd's readiness protocol (``Type=notify``), stdlib only.

When systemd starts the service it sets ``NOTIFY_SOCKET``; the proxy sends ``READY=1``
once it accepts connections and ``STOPPING=1`` when it begins to shut down, so ``systemctl
start`` returns only when the proxy really serves. Without the variable this does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send *message* (``KEY=value`` lines); True when a service manager received it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(target)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True
