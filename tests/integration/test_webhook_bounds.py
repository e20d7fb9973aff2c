"""Webhook delivery against hostile subscribers (real `pamfr serve`, real HTTP receivers on
127.0.0.1): a huge answer costs the daemon a few KiB, a dripping one fails at the deadline
and is retried, and a weak set-up is refused at start."""

from __future__ import annotations

from pathlib import Path

from pamfr.hl7.samples import Person, message
from tests.helpers import Daemon, run_cli, send, start_daemon
from tests.webhook_sink import WebhookSink

SECRET = "bounds-secret-0123456789abcdef0123456789"


def _serve(db_url: str, tmp_path: Path, sink: WebhookSink, timeout: float) -> Daemon:
    config = tmp_path / "pamfr.toml"
    config.write_text(
        "[feed]\npoll_interval = 0.1\nretry_initial = 0.1\nretry_max = 0.2\n\n"
        f'[[webhooks]]\nname = "crm"\nurl = "{sink.url}"\nsecret = "{SECRET}"\n'
        f"timeout = {timeout}\n"
    )
    return start_daemon(
        db_url, tmp_path / "serve.log", config=config, env={"PAMFR_RECEIVER_PARSE_WORKERS": "0"}
    )


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_huge_answer_is_not_read(db_url, tmp_path):
    sink = WebhookSink(SECRET, status=200, answer_size=300 * 1024 * 1024)
    served = _serve(db_url, tmp_path, sink, timeout=30)
    try:
        send(served.port, [message("A28", Person("BIG0"), "BIG0")])
        sink.wait_for({1})
        before = _rss_kib(served.proc.pid)
        acks = send(served.port, [message("A28", Person(f"BIG{n}"), f"BIG{n}") for n in (1, 2, 3)])
        assert [a.code for a in acks] == ["AA"] * 3
        sink.wait_for({1, 2, 3, 4})
        after = _rss_kib(served.proc.pid)
    finally:
        served.kill_group()
        sink.stop()
    assert all(r.signed for r in sink.received)  # timestamped signature, checked by the sink
    print(
        f"\nwebhook: daemon RSS {before / 1024:.0f} MB, {after / 1024:.0f} MB after 300 MB answers"
    )
    assert after - before < 50 * 1024, (before, after)


def test_a_dripping_answer_fails_at_the_deadline_and_is_retried(db_url, tmp_path):
    sink = WebhookSink(SECRET, status=200, drip=0.3)
    served = _serve(db_url, tmp_path, sink, timeout=1)
    try:
        send(served.port, [message("A28", Person("DRIP1"), "DRIP1")])
        served.wait_log(r"webhook crm: delivery failed \(2 in a row\): no answer within 1s", 30)
        # each dripping answer was taken for a failure, not for an acknowledgement
        assert sink.attempts >= 2
        sink.drip = 0.0
        sink.wait_for({1})
    finally:
        served.kill_group()
        sink.stop()
    found = [r.event_id for r in sink.received]
    assert found and set(found) == {1}


def test_a_weak_webhook_set_up_is_refused_at_start_in_one_line(sqlite_url, tmp_path):
    config = tmp_path / "pamfr.toml"
    for hook, says in [
        (
            'url = "http://127.0.0.1:9/hook"\nsecret = "short"\n',
            "webhooks.0: the secret must be at least 32 bytes",
        ),
        (
            f'url = "http://crm.example.org/hook"\nsecret = "{SECRET}"\n',
            "webhooks.0: url: http:// only to the loopback",
        ),
    ]:
        config.write_text(f'[[webhooks]]\nname = "crm"\n{hook}')
        done = run_cli("--config", str(config), "serve", "--port", "0", "--db", sqlite_url)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "short" not in done.stderr.replace("secret must", "")
