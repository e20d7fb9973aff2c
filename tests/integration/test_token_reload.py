"""A token removed from the configuration file and SIGHUP: the daemon says the change needs a
restart (the running tokens stay until then) instead of keeping the removed token in silence.
Real `pamfr serve` with a configuration file, real HTTP on 127.0.0.1."""

from __future__ import annotations

import re
import signal

import httpx

from pamfr.store.db import upgrade
from tests.helpers import start_daemon

KEPT = "kept-0123456789abcdef01234567"
REVOKED = "revoked-0123456789abcdef012345"
SECRET = "desk-secret-0123456789abcdef0123456789"


def _config(path, tokens: dict[str, str], idle: int = 30) -> None:
    lines = "".join(f'{name} = "{token}"\n' for name, token in tokens.items())
    path.write_text(
        '[http]\nlisten = "127.0.0.1:0"\n[http.tokens]\n'
        + lines
        + f'[desk]\nenabled = true\nsecret = "{SECRET}"\nidle_minutes = {idle}\n'
    )


def test_a_token_or_desk_change_on_sighup_is_said_to_need_a_restart(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(db_url)
    config = tmp_path / "pamfr.toml"
    _config(config, {"kept": KEPT, "revoked": REVOKED})
    # the tokens are the configuration file's: none given by the environment
    env = {"PAMFR_HTTP_TOKENS": ""}
    daemon = start_daemon(db_url, tmp_path / "serve.log", config=config, env=env)
    try:
        found = daemon.wait_log(r"HTTP port on [^ ]+:(\d+)", timeout=60)
        base = f"http://127.0.0.1:{found.group(1)}"
        bearer = {"authorization": f"Bearer {REVOKED}"}
        assert httpx.get(f"{base}/events", headers=bearer).status_code == 200
        _config(config, {"kept": KEPT}, idle=5)
        start = len(daemon.log())
        daemon.signal(signal.SIGHUP)
        line = daemon.wait_log(r"[^\n]*changed, applied at the next restart only", start=start)
        assert "http.tokens" in line.group(0) and "desk.idle_minutes" in line.group(0)
        assert "WARNING" in line.group(0)
        log = daemon.log()
        assert REVOKED not in log and KEPT not in log and SECRET not in log
        assert not re.search(r"revoked-\w", log)
    finally:
        try:
            daemon.stop()
        finally:
            daemon.kill_group()
