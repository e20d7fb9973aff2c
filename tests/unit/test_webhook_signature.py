"""The webhook signature: pamfr's header against the README's verification snippet, as a
product would run it (a fresh delivery passes; a changed body, another secret or an old
timestamp does not)."""

from __future__ import annotations

import re
import time

from pamfr.feed.delivery import signature
from tests.conftest import REPO

SECRET = "webhook-secret-0123456789abcdef012345"


def readme_verify():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "def verify" in b]
    space: dict = {}
    exec(code, space)  # the README's own snippet, not a copy of it
    return space["verify"]


def test_the_readme_snippet_accepts_a_fresh_delivery_and_rejects_replays_and_forgeries():
    verify = readme_verify()
    body = b'{"id":7,"type":"patient.created"}'
    now = int(time.time())
    headers = {"X-Pamfr-Timestamp": str(now), "X-Pamfr-Signature": signature(SECRET, now, body)}
    assert verify(SECRET.encode(), headers, body)
    assert not verify(SECRET.encode(), headers, body.replace(b"7", b"8"))
    assert not verify(b"another-secret-0123456789abcdef0123", headers, body)
    old = now - 301
    replayed = {"X-Pamfr-Timestamp": str(old), "X-Pamfr-Signature": signature(SECRET, old, body)}
    assert not verify(SECRET.encode(), replayed, body)
    # the timestamp is signed: a fresh one on an old signature does not pass either
    moved = {**replayed, "X-Pamfr-Timestamp": str(now)}
    assert not verify(SECRET.encode(), moved, body)


def test_the_signature_covers_the_timestamp_and_the_body():
    body = b"{}"
    assert signature(SECRET, 1, body) != signature(SECRET, 2, body)
    assert signature(SECRET, 1, body).startswith("sha256=")
    assert len(signature(SECRET, 1, body)) == len("sha256=") + 64
