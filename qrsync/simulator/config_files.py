"""The two files ``qrsync simulator`` writes for its default world: a qrsync configuration and the
(fake) secrets it names, as ``NAME=value`` lines.

Each file starts with a marker line that carries a digest of the rest, so the simulator knows at
its next start whether a file is its own and unchanged (rewritten), its own but edited since, for
instance to add a database (kept as it is), or somebody else's (refused: the simulator stops
before it listens rather than overwrite it).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qrsync.simulator.default_world import qrsync_config, secret_assignments

MARKER = "# Written by `qrsync simulator`"
_STAMP = re.compile(re.escape(MARKER) + r" \(sha256:(?P<digest>[0-9a-f]{16})\)")

FileState = Literal["absent", "ours", "edited", "foreign"]
"""absent: nothing there; ours: the simulator's, unchanged; edited: the simulator's, changed
since; foreign: anything else (another file, a directory, unreadable)."""


class NotOurs(Exception):
    """A path the simulator must not write: somebody else's file, or no directory to write in."""


@dataclass(frozen=True)
class Written:
    """What became of one file: ``kept`` when it was the simulator's but edited since."""

    path: Path
    kept: bool


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def stamped(body: str) -> str:
    """``body`` under the marker line that makes it the simulator's own."""
    return f"{MARKER} (sha256:{_digest(body)}); rewritten at each start unless edited.\n{body}"


def state(path: Path) -> FileState:
    """Whose the file at ``path`` is (see :data:`FileState`)."""
    if not path.exists() and not path.is_symlink():
        return "absent"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return "foreign"
    first, _, body = text.partition("\n")
    if not first.startswith(MARKER):
        return "foreign"
    stamp = _STAMP.match(first)
    return "ours" if stamp is not None and stamp["digest"] == _digest(body) else "edited"


def check_writable(path: Path, option: str) -> None:
    """Raise :class:`NotOurs` unless the simulator may write (or keep) ``path``; called before
    it listens, so that a refusal starts nothing."""
    if state(path) == "foreign":
        problem = "is a directory" if path.is_dir() else "exists and is not the simulator's"
        raise NotOurs(
            f"{path} {problem}: left alone. Move it away, or choose another path with "
            f"{option} PATH, or print to standard output with --stdout"
        )
    parent = path.parent
    if not parent.is_dir():
        raise NotOurs(f"{path}: directory {parent} does not exist ({option} PATH to choose)")


def shell_path(path: Path) -> str:
    """``path`` as a shell word that ``.`` reads from where it is, not from $PATH."""
    text = str(path)
    return shlex.quote(text if os.sep in text else f".{os.sep}{text}")


def config_body(base_url: str, config_path: Path, env_path: Path) -> str:
    """The configuration file's text below its marker: how to use it, then the configuration."""
    return (
        f"# qrsync's configuration of the simulator's default world at {base_url}; the secrets\n"
        f"# it names are in {env_path}. Use it with:\n"
        f"#   set -a; . {shell_path(env_path)}; set +a\n"
        f"#   qrsync --config {shlex.quote(str(config_path))} db upgrade"
        "   # then sync, report, accounts, ...\n"
        "#\n" + qrsync_config(base_url)
    )


def env_body(config_path: Path, env_path: Path) -> str:
    """The secrets file's text below its marker."""
    return (
        f"# The simulated secrets {config_path} names (fake: they open nothing but the\n"
        f"# simulator). Load them with:  set -a; . {shell_path(env_path)}; set +a\n"
        + "\n".join(secret_assignments())
        + "\n"
    )


def write(path: Path, body: str, private: bool) -> Written:
    """Write ``body`` under the marker at ``path``, unless the file there is the simulator's but
    was edited since (kept). ``private`` files (secrets) get mode 0600 whatever the umask.

    The text goes to a new file beside ``path`` that then replaces it, so a reader never sees
    half a file. Raises :class:`NotOurs` for a foreign file and OSError when it cannot write.
    """
    found = state(path)
    if found == "foreign":
        raise NotOurs(f"{path} exists and is not the simulator's: left alone")
    if found == "edited":
        return Written(path, kept=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    mode = 0o600 if private else 0o666  # the umask applies to the latter only
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with open(descriptor, "w", encoding="utf-8") as file:
            if private:
                os.fchmod(file.fileno(), 0o600)
            file.write(stamped(body))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return Written(path, kept=False)
