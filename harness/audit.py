"""What a pack's code does at run time, seen through Python's audit hooks (PEP 578): network and process events,
code compiled or executed on its behalf, unpickling, and the files it opens or lists.

    with watching(files) as events: ...       # files: the sources whose frames count as the pack's

Each event is (name, argument, [the frames' files that asked]). A hook cannot be removed once added: one is added
on first use and records only inside watching(). Nothing happens on import.
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
from collections.abc import Iterable

NETWORK_EVENTS = frozenset({
    "socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
    "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg", "urllib.Request", "http.client.connect",
    "http.client.send", "ftplib.connect", "smtplib.connect", "poplib.connect", "imaplib.open", "nntplib.connect",
    "webbrowser.open", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "pty.spawn",
})
CODE_EVENTS = frozenset({"exec", "compile", "marshal.loads", "marshal.load"})
FILE_EVENTS = frozenset({"open", "os.listdir", "os.scandir", "glob.glob"})
WATCHED = NETWORK_EVENTS | CODE_EVENTS | FILE_EVENTS | {"pickle.find_class"}
STDLIB = (sysconfig.get_paths()["stdlib"], "<frozen ")

_STATE: dict = {"events": None, "files": frozenset(), "installed": False}  # events None: not watching


def _frames(frame):
    """The stack from `frame` outwards."""
    while frame is not None:
        yield frame
        frame = frame.f_back


def _hook(event: str, args: tuple) -> None:
    events = _STATE["events"]
    if events is None or not (event in WATCHED or event.startswith("socket.")):
        return  # (sys._getframe below is audited too: only after this)
    files = _STATE["files"]
    caller = sys._getframe(1)  # the audited call's frame
    if event in NETWORK_EVENTS or event.startswith("socket."):
        events.append((event, repr(args)[:200], [f.f_code.co_filename for f in _frames(caller)]))
    elif event in CODE_EVENTS:
        # The frame that called eval / exec / compile / marshal. importlib compiles and execs the pack's modules:
        # that is importing, not the pack.
        if caller.f_code.co_filename in files:
            events.append((event, repr(args)[:200], [caller.f_code.co_filename]))
    elif event == "pickle.find_class":  # unpickling anything, on the pack's behalf
        pack = [f.f_code.co_filename for f in _frames(caller) if f.f_code.co_filename in files]
        if pack:
            events.append((event, repr(args)[:200], pack[:1]))
    elif event in FILE_EVENTS:
        # Who asked: the innermost frame outside the standard library (pathlib, importlib...). The pack itself, or
        # folder_paths called by the pack, count; a library's own reads (psutil's /proc/meminfo during sampling,
        # importlib loading a module) do not.
        frames = [f.f_code.co_filename for f in _frames(caller)]
        asker = ""
        for filename in frames:
            if filename.startswith("<frozen importlib"):
                return  # an import
            if not filename.startswith(STDLIB):
                asker = filename
                break
        if not any(f in files for f in frames):
            return
        if (asker in files or asker.endswith("folder_paths.py")) and args and \
                isinstance(args[0], str | bytes | os.PathLike):
            events.append((event, os.fsdecode(args[0]), [asker]))


@contextlib.contextmanager
def watching(files: Iterable[str | os.PathLike]):
    """Record the audit events of the code in `files` (and of folder_paths when it reads for that code) while the
    block runs. Yields the list the events go to."""
    if not _STATE["installed"]:
        sys.addaudithook(_hook)
        _STATE["installed"] = True
    _STATE["files"] = frozenset(os.fspath(f) for f in files)
    _STATE["events"] = events = []
    try:
        yield events
    finally:
        _STATE["events"] = None
