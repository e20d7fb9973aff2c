"""Message sets on disk: the files of a set, the messages of a file, and what replay reads
of each message (control id, event, the patients it is about) or rewrites (MSH-10).

Headers are read with hl7/er7.read_header, which honours the message's own separators
(MSH-1, MSH-2).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pamfr.hl7.er7 import read_header, split_segments
from pamfr.hl7.errors import MessageRejected
from pamfr.ingest.files import UnreadableFile, file_messages

SKIPPED_SUFFIXES = (".ack", ".error")  # what the file-drop door writes beside a file


def collect_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders walked recursively in sorted order.

    Inside folders, dot-files and the .ack/.error files of the file-drop door are left out,
    so a done/ folder can be replayed as it is.
    """
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            files.append(path)
            continue
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files.extend(
                Path(root) / n
                for n in sorted(names)
                if not n.startswith(".") and not n.endswith(SKIPPED_SUFFIXES)
            )
    return files


def load_messages(path: Path) -> list[bytes]:
    """The messages of one file; UnreadableFile (with the reason) when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"cannot read the file: {exc.strerror or exc}") from None
    return file_messages(data)


def count_messages(files: Sequence[Path]) -> int:
    """The messages of every readable file (unreadable files count none)."""
    total = 0
    for path in files:
        with contextlib.suppress(UnreadableFile):
            total += len(load_messages(path))
    return total


class ControlIdRewriter:
    """A fresh MSH-10 for every message: a random run token and a counter (18 characters)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or uuid.uuid4().hex[:10]
        self.count = 0

    def __call__(self, raw: bytes) -> bytes:
        self.count += 1
        return rewrite_control_id(raw, f"{self.token}{self.count:08d}")


def rewrite_control_id(raw: bytes, control_id: str) -> bytes:
    """The message with MSH-10 replaced and every other byte unchanged (as is, if no MSH).

    An edit in place rather than a parse and a re-serialisation: every byte but MSH-10's
    must stay as sent, including those a parser would normalise."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 8:
        return raw
    sep = raw[start + 3 : start + 4]
    end = len(raw)
    for eol in (b"\r", b"\n"):
        pos = raw.find(eol, start)
        if pos != -1:
            end = min(end, pos)
    fields = raw[start:end].split(sep)
    if len(fields) < 10:
        return raw
    fields[9] = control_id.encode("ascii")
    return raw[:start] + sep.join(fields) + raw[end:]


def header_facts(raw: bytes) -> tuple[str, str]:
    """(control id, event) as read from the message itself; empty when unreadable."""
    try:
        header = read_header(raw)
    except MessageRejected:
        return "", ""
    return header.control_id, header.event


def patient_keys(raw: bytes) -> frozenset[bytes]:
    """The identifiers a message is about: every repetition of PID-3 (each PID: A24/A37 carry
    two) and of MRG-1, as value and assigning authority, read with the message's own
    separators. Empty when there is none to read, or no usable MSH."""
    try:
        header = read_header(raw)
    except MessageRejected:
        return frozenset()
    field_sep = header.field_sep
    component, repetition = header.encoding_chars[0], header.encoding_chars[1]
    keys: set[bytes] = set()
    # Latin-1 maps every byte to one character and back: the keys are the bytes as sent.
    for segment in split_segments(raw.decode("latin-1")):
        name = segment[:4]
        if name == "PID" + field_sep:
            position = 3
        elif name == "MRG" + field_sep:
            position = 1
        else:
            continue
        fields = segment.split(field_sep)
        if len(fields) <= position:
            continue
        for rep in fields[position].split(repetition):
            parts = rep.split(component)
            if parts[0]:
                authority = parts[3] if len(parts) > 3 else ""
                keys.add((parts[0] + "^" + authority).encode("latin-1"))
    return frozenset(keys)


@dataclass(frozen=True, slots=True)
class SetMessage:
    """One message of a set: where it stands, its bytes as sent, and its MSH-10 before a
    --new-control-ids rewrite."""

    file: str
    index: int  # 1-based, in its file
    raw: bytes
    original_control_id: str | None


def read_file(path: Path, rewrite: ControlIdRewriter | None) -> list[SetMessage]:
    """The messages of one file of the set, rewritten when asked; UnreadableFile when it
    cannot be read."""
    out = []
    for i, raw in enumerate(load_messages(path), 1):
        original = None
        if rewrite is not None:
            original = header_facts(raw)[0]
            raw = rewrite(raw)
        out.append(SetMessage(str(path), i, raw, original))
    return out
