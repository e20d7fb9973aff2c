"""Who may send: the peer and sender allow-lists, and their reload on SIGHUP (with the log
level) while connections stay open."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from pamfr.hl7.samples import Person, message
from pamfr.transport.client import MLLPConnectionClosed
from tests.helpers import Daemon, log_rows, parse_ack, start_daemon
from tests.reliability.common import connect

NOT_ALLOWED = "sending application/facility (MSH-3/MSH-4) not allowed on this listener"


def _config(
    path: Path, peers: list[str] = (), senders: list[str] = (), level="info", extra=""
) -> Path:
    path.write_text(
        f"[server]\n{extra}"
        f"allowed_peers = {json.dumps(list(peers))}\n"
        f"allowed_senders = {json.dumps(list(senders))}\n"
        "[log]\n"
        f'level = "{level}"\n'
    )
    return path


def _a28(control_id: str, sender: str = "GAM|CHU-X") -> bytes:
    text = message("A28", Person(ipp=f"P{control_id}"), control_id)
    return text.replace("|GAM|CHU-X|", f"|{sender}|", 1).encode()


def _logged(db_url: str) -> list[tuple]:
    return log_rows(db_url, "peer", "sending_app", "control_id", "outcome", "error_text")


def _reload(daemon: Daemon) -> str:
    """SIGHUP, then the line the daemon logged about it."""
    start = len(daemon.log())
    daemon.signal(signal.SIGHUP)
    found = daemon.wait_log(r"[^\n]*configuration (?:not )?reloaded[^\n]*", start=start)
    return found.group(0)


def _stop(daemon: Daemon) -> None:
    daemon.signal(signal.SIGTERM)
    try:
        assert daemon.proc.wait(30) == 0
    finally:
        daemon.kill_group()


def test_peer_allow_list_and_its_reload(sqlite_url, tmp_path):
    config = _config(tmp_path / "pamfr.toml", peers=["127.0.0.2/32"])
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", config=config)

    async def scenario() -> None:
        # 127.0.0.1 is not in the list: the connection is closed without a byte of answer.
        outsider = await connect(daemon.port, source="127.0.0.1")
        try:
            await outsider.send(_a28("PEER-1"), timeout=10)
            raise AssertionError("a peer outside the allow-list got an answer")
        except MLLPConnectionClosed:
            pass
        insider = await connect(daemon.port, source="127.0.0.2")
        assert parse_ack(await insider.send(_a28("PEER-2"), timeout=10)).code == "AA"

        # Reload: 127.0.0.1 only. The open connection from 127.0.0.2 is kept...
        _config(config, peers=["127.0.0.1"])
        line = _reload(daemon)
        assert "server.allowed_peers: [127.0.0.2/32] -> [127.0.0.1]" in line, line
        assert parse_ack(await insider.send(_a28("PEER-3"), timeout=10)).code == "AA"
        await insider.close()
        # ... new connections follow the new list.
        newcomer = await connect(daemon.port, source="127.0.0.1")
        assert parse_ack(await newcomer.send(_a28("PEER-4"), timeout=10)).code == "AA"
        await newcomer.close()
        late = await connect(daemon.port, source="127.0.0.2")
        try:
            await late.send(_a28("PEER-5"), timeout=10)
            raise AssertionError("a peer removed from the allow-list got an answer")
        except MLLPConnectionClosed:
            pass

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        _stop(daemon)
    assert daemon.log().count("address not in the allow-list") == 2
    logged = [(peer.split(":")[0], cid, code) for peer, _, cid, code, _ in _logged(sqlite_url)]
    assert logged == [
        ("127.0.0.2", "PEER-2", "AA"),
        ("127.0.0.2", "PEER-3", "AA"),
        ("127.0.0.1", "PEER-4", "AA"),
    ]


def test_sender_allow_list_ar_207_then_sighup_on_the_same_connection(sqlite_url, tmp_path):
    config = _config(tmp_path / "pamfr.toml", senders=["GAM|CHU-X"])
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", config=config)
    lines: dict[str, str] = {}

    async def scenario() -> None:
        client = await connect(daemon.port)
        assert parse_ack(await client.send(_a28("S-1"), timeout=10)).code == "AA"
        refused = parse_ack(await client.send(_a28("S-2", "OTHER|CLINIQUE"), timeout=10))
        assert (refused.code, refused.control_id, refused.err_codes) == ("AR", "S-2", ["207"])
        assert NOT_ALLOWED in refused.raw.decode()

        # Let OTHER in: the same connection, the same message (an AR invites a resend).
        _config(config, senders=["GAM|CHU-X", "OTHER|*"])
        lines["allow"] = _reload(daemon)
        assert parse_ack(await client.send(_a28("S-2", "OTHER|CLINIQUE"), timeout=10)).code == "AA"

        # A configuration that does not load is refused as a whole; the running one stays.
        config.write_text('[server]\nallowed_peers = ["10.0.0.0/33"]\nallowed_senders = []\n')
        lines["invalid"] = _reload(daemon)
        third = parse_ack(await client.send(_a28("S-3", "THIRD|X"), timeout=10))
        assert (third.code, third.err_codes) == ("AR", ["207"])
        assert parse_ack(await client.send(_a28("S-4", "OTHER|Y"), timeout=10)).code == "AA"

        # The log level follows the file too; a key that needs a restart is only reported.
        extra = "max_connections = 10\n"
        _config(config, senders=["GAM|CHU-X", "OTHER|*"], level="debug", extra=extra)
        lines["debug"] = _reload(daemon)
        before = len(daemon.log())
        assert parse_ack(await client.send(_a28("S-5"), timeout=10)).code == "AA"
        daemon.wait_log(r"DEBUG pamfr\.transport\.server: 127\.0\.0\.1:\d+: frame of", start=before)
        await client.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        _stop(daemon)
    log = daemon.log()
    assert "INFO pamfr.service.reload: configuration reloaded" in lines["allow"]
    assert "server.allowed_senders: [GAM|CHU-X] -> [GAM|CHU-X, OTHER|*]" in lines["allow"]
    assert "ERROR pamfr.service.reload: configuration not reloaded" in lines["invalid"]
    assert "server.allowed_peers" in lines["invalid"]
    assert "log.level: info -> debug" in lines["debug"]
    assert "server.max_connections changed, applied at the next restart only" in log
    # One connection from the first message to the last: never dropped by a reload.
    assert log.count("opened") == 1 and log.count("closed (6 messages handled)") == 1
    logged = [(app, cid, code, err) for _, app, cid, code, err in _logged(sqlite_url)]
    assert logged == [
        ("GAM", "S-1", "AA", None),
        ("OTHER", "S-2", "AR", f"207 MSH^1^3: {NOT_ALLOWED}"),
        ("OTHER", "S-2", "AA", None),
        ("THIRD", "S-3", "AR", f"207 MSH^1^3: {NOT_ALLOWED}"),
        ("OTHER", "S-4", "AA", None),
        ("GAM", "S-5", "AA", None),
    ]
