"""`pamfr serve` with the desk on, on a store loaded by tests/desk/store.py, and a signed-in
HTTP client (httpx) for the desk's pages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from pamfr.store.db import upgrade
from tests.desk.store import Loaded, load
from tests.helpers import Daemon, start_daemon

OPERATOR_TOKEN = "alice-0123456789abcdef0123"
READER_TOKEN = "bob-0123456789abcdef012345"
SECRET = "desk-secret-0123456789abcdef0123456789"


@dataclass
class Desk:
    daemon: Daemon
    base: str
    db_url: str
    loaded: Loaded

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, follow_redirects=False, timeout=30)

    def signed_in(self, token: str = OPERATOR_TOKEN) -> httpx.Client:
        client = self.client()
        form = client.get("/desk/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        answer = client.post("/desk/signin", data={"csrf": csrf, "token": token})
        assert answer.status_code == 303, answer.text
        return client


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


@contextmanager
def desk_daemon(tmp_path, **env: str) -> Iterator[Desk]:
    """The daemon with the fixed configuration: reused control ids applied; its file drop
    holds one file whose last segment has no terminator (incomplete: it waits)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "half.hl7").write_bytes(b"MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|2024||ADT^A28|H1|T|2.5")
    db_url = f"sqlite:///{tmp_path / 'desk.db'}"
    upgrade(db_url)
    # in a thread of its own: the browser tests' Playwright holds an event loop in this one
    with ThreadPoolExecutor(1) as pool:
        loaded = pool.submit(load, db_url).result()
    daemon = start_daemon(
        db_url,
        tmp_path / "daemon.log",
        env={
            "PAMFR_RECEIVER_PARSE_WORKERS": "0",
            "PAMFR_HTTP_LISTEN": "127.0.0.1:0",
            "PAMFR_HTTP_TOKENS": json.dumps({"alice": OPERATOR_TOKEN, "bob": READER_TOKEN}),
            "PAMFR_DESK_ENABLED": "true",
            "PAMFR_DESK_OPERATORS": '["alice"]',
            "PAMFR_DESK_SECRET": SECRET,
            "PAMFR_HL7_REUSED_CONTROL_ID": "apply",
            "PAMFR_FILEDROP_DIRS": json.dumps([str(inbox)]),
            **env,
        },
    )
    try:
        port = int(re.search(r"HTTP port on [^ ]+:(\d+)", daemon.log()).group(1))
        yield Desk(daemon, f"http://127.0.0.1:{port}", db_url, loaded)
    finally:
        daemon.stop()
