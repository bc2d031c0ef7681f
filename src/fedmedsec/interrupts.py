"""Ctrl-C that no library can swallow.

SIGINT raises KeyboardInterrupt wherever the driver is, but a library may turn it into an
ordinary exception on the way (a Ray call interrupted mid-way comes back as a failed reply,
which the transport records as a dropped hospital, and the round would go on). The CLI's
handler also sets ``INTERRUPTED``; the round loop and the Ray grid call
``stop_if_interrupted`` at their waits and round boundaries and raise it again.
"""

from __future__ import annotations

import signal
import threading

INTERRUPTED = threading.Event()


def stop_if_interrupted() -> None:
    """Raise KeyboardInterrupt when Ctrl-C was pressed since ``install``."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def _on_sigint(signum, frame) -> None:
    INTERRUPTED.set()
    raise KeyboardInterrupt


def install() -> None:
    """Clear the flag and, in the main thread with Python's default SIGINT handling, route
    SIGINT through ``_on_sigint`` (same KeyboardInterrupt, plus the flag)."""
    INTERRUPTED.clear()
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
