"""Reading ``NAME=value`` environment files.

One format serves three readers: this program, systemd's ``EnvironmentFile=`` and the original
Bun program's ``--env-file``. So the rules are the intersection that all three agree on, plus
what the original's ``init`` writes:

* blank lines and lines starting with ``#`` (or systemd's ``;``) are skipped;
* an optional leading ``export `` is ignored, so the file can also be ``source``-d by a shell;
* the line is split at the first ``=``; the name must be a shell-style identifier;
* a value in double quotes is decoded as a JSON string (the original writes values that are not
  plain ``[A-Za-z0-9_./:@-]*`` with ``JSON.stringify``), a value in single quotes is taken
  literally without its quotes, anything else is taken as written (surrounding blanks removed);
* a name given twice keeps its last value, as in systemd.

Problems are returned per line rather than raised, so the caller can report every one of them
together with the rest of the configuration. Messages never repeat a value: it may be a secret.

``format_assignment`` writes a line the same three readers take back unchanged: plain values
bare, anything else double-quoted as a JSON string (what the original's ``init`` writes).

``read_text`` is shared with the other small files configuration reads (``NAME_FILE`` secrets,
systemd credentials, the providers file) so they all fail with the same short reason.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What may stay unquoted: nothing a shell, systemd or our reader treats specially.
_BARE = re.compile(r"[A-Za-z0-9_./:@-]*")


class EnvFileProblem(NamedTuple):
    line: int
    message: str


def parse_env_text(text: str) -> tuple[dict[str, str], list[EnvFileProblem]]:
    """Parse the text of an env file into ``{name: value}`` and a list of bad lines."""
    values: dict[str, str] = {}
    problems: list[EnvFileProblem] = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith(("export ", "export\t")):
            stripped = stripped[len("export"):].lstrip()
        name, equals, raw_value = stripped.partition("=")
        name = name.strip()
        if not equals:
            problems.append(EnvFileProblem(number, "is not a NAME=value line"))
            continue
        if not _NAME.fullmatch(name):
            problems.append(EnvFileProblem(number, "does not start with a valid variable name"))
            continue
        value = _unquote(raw_value.strip())
        if value is None:
            problems.append(EnvFileProblem(number, f"{name} has a badly quoted value"))
            continue
        values[name] = value
    return values, problems


class UnreadableFile(Exception):
    """A file could not be read; ``str()`` is a short reason such as "Permission denied"."""


def read_text(path: str) -> str:
    """The UTF-8 text of *path*; raises :class:`UnreadableFile` with the reason."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from None
    except UnicodeError:
        raise UnreadableFile("it is not valid UTF-8") from None


def read_env_file(path: str) -> tuple[dict[str, str], list[EnvFileProblem]]:
    """Read and parse *path*; raises :class:`UnreadableFile` if it can't be read."""
    return parse_env_text(read_text(path))


def _unquote(value: str) -> str | None:
    """The value a quoted or bare field stands for, or ``None`` if the quoting is broken."""
    if value.startswith('"'):
        try:
            decoded = json.loads(value)
        except ValueError:
            return None
        return decoded if isinstance(decoded, str) else None
    if value.startswith("'"):
        if len(value) < 2 or not value.endswith("'"):
            return None
        return value[1:-1]
    return value


def quote_value(value: str) -> str:
    """*value* as written after ``NAME=``: bare when plain, else a JSON string."""
    if _BARE.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=False)


def format_assignment(name: str, value: str) -> str:
    """One ``NAME=value`` line (without its newline) that reads back as *value*."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a variable name")
    return f"{name}={quote_value(value)}"


def assigned_name(line: str) -> str | None:
    """The variable one line of an env file assigns; None for comments, blanks and noise."""
    stripped = line.strip()
    if not stripped or stripped[0] in "#;":
        return None
    if stripped.startswith(("export ", "export\t")):
        stripped = stripped[len("export"):].lstrip()
    name, equals, _ = stripped.partition("=")
    name = name.strip()
    return name if equals and _NAME.fullmatch(name) else None
