"""`pamfr status`: a running daemon's readiness and counters, read from its HTTP port."""

from __future__ import annotations

import json
import math
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import click

from pamfr.cli.common import Context, config_option


class NoAnswer(click.ClickException):
    """Nothing (or nothing like pamfr) answers at the address: exit 2, one line."""

    exit_code = 2


@dataclass
class Samples:
    """The samples of a /metrics text, by sample name (e.g. pamfr_messages_total)."""

    by_name: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Samples:
        from prometheus_client.parser import text_string_to_metric_families

        by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                by_name[s.name].append((s.labels, s.value))
        return cls(dict(by_name))

    def total(self, name: str, **match: str) -> float:
        return sum(
            v
            for labels, v in self.by_name.get(name, [])
            if all(labels.get(k) == want for k, want in match.items())
        )

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for labels, v in self.by_name.get(name, []):
            if all(labels.get(k) == want for k, want in match.items()):
                out[labels.get(label, "")] += v
        return dict(out)

    def has(self, name: str) -> bool:
        return name in self.by_name

    def quantile_bound(self, name: str, q: float) -> float | None:
        """The smallest histogram bucket bound under which a share q of observations fall."""
        buckets = sorted(
            (float(labels["le"]), v) for labels, v in self.by_name.get(f"{name}_bucket", [])
        )
        count = self.total(f"{name}_count")
        if not count:
            return None
        for bound, cumulative in buckets:
            if cumulative >= q * count:
                return bound
        return math.inf


def _n(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def _ms(seconds: float) -> str:
    return "more than the last bucket" if math.isinf(seconds) else f"{seconds * 1000:g} ms"


def summary(s: Samples) -> dict[str, Any]:
    """The figures `pamfr status` shows, as plain values."""
    latency_count = s.total("pamfr_ack_latency_seconds_count")
    commits = s.total("pamfr_commit_batch_size_count")
    out: dict[str, Any] = {
        "messages": {
            "total": s.total("pamfr_messages_total"),
            "by_outcome": s.by("pamfr_messages_total", "outcome"),
            "with_warning": s.total("pamfr_messages_total", warning="1"),
            "by_door": s.by("pamfr_messages_total", "door"),
            "err_codes": s.by("pamfr_ack_errors_total", "code", severity="E"),
            "warning_codes": s.by("pamfr_ack_errors_total", "code", severity="W"),
        },
        "ack_latency": {
            "count": latency_count,
            "mean_ms": (
                s.total("pamfr_ack_latency_seconds_sum") / latency_count * 1000
                if latency_count
                else None
            ),
            "p50_under_ms": _bound_ms(s.quantile_bound("pamfr_ack_latency_seconds", 0.5)),
            "p99_under_ms": _bound_ms(s.quantile_bound("pamfr_ack_latency_seconds", 0.99)),
        },
        "last_message_at": s.total("pamfr_last_message_timestamp_seconds") or None,
        "connections": {
            "open": s.total("pamfr_open_connections"),
            "refused": s.total("pamfr_connections_refused_total"),
        },
        "queue": s.by("pamfr_queue_depth", "stage"),
        "commits": {
            "count": commits,
            "mean_batch": s.total("pamfr_commit_batch_size_sum") / commits if commits else None,
            "mean_ms": (
                s.total("pamfr_commit_duration_seconds_sum") / commits * 1000 if commits else None
            ),
        },
    }
    if s.has("pamfr_parse_workers_alive"):
        out["parse_workers"] = {
            "alive": s.total("pamfr_parse_workers_alive"),
            "restarts": s.total("pamfr_parse_worker_restarts_total"),
        }
    if s.has("pamfr_filedrop_backlog_files"):
        out["filedrop"] = {
            "waiting": s.total("pamfr_filedrop_backlog_files"),
            "errored": s.total("pamfr_filedrop_files_total", result="error"),
            "done": s.total("pamfr_filedrop_files_total", result="done"),
            "held": {
                box: {
                    "seconds": seconds,
                    "behind": s.total("pamfr_filedrop_held_back_files", inbox=box),
                }
                for box, seconds in s.by("pamfr_filedrop_held_seconds", "inbox").items()
                if seconds > 0
            },
        }
    if s.has("pamfr_identities") or s.has("pamfr_ins_collisions"):
        out["identities"] = {
            "by_status": s.by("pamfr_identities", "status"),
            "ins_collisions": s.total("pamfr_ins_collisions"),
        }
    return out


def _bound_ms(bound: float | None) -> float | None:
    if bound is None:
        return None
    return math.inf if math.isinf(bound) else bound * 1000


def _counts(values: dict[str, float], times: bool = False) -> str:
    sep = " x" if times else " "
    return ", ".join(f"{k}{sep}{_n(v)}" for k, v in sorted(values.items())) or "none"


def render(address: str, readiness: dict[str, Any], figures: dict[str, Any]) -> list[str]:
    lines = [f"pamfr at {address}: {readiness.get('status', 'unknown')}"]
    for name, check in readiness.get("checks", {}).items():
        mark = "ok" if check.get("ok") else "FAILED"
        lines.append(f"  {name:<14} {mark:<6} {check.get('detail', '')}")
    m = figures["messages"]
    outcomes = ", ".join(f"{k} {_n(v)}" for k, v in sorted(m["by_outcome"].items()))
    lines.append(
        f"messages         {_n(m['total'])}"
        + (f": {outcomes} ({_n(m['with_warning'])} with a warning)" if m["total"] else "")
    )
    if m["total"]:
        lines.append(f"  by door        {_counts(m['by_door'])}")
        lines.append(f"  ERR codes      {_counts(m['err_codes'], times=True)}")
        lines.append(f"  warning codes  {_counts(m['warning_codes'], times=True)}")
    lat = figures["ack_latency"]
    if lat["count"]:
        lines.append(
            f"ACK latency      {_n(lat['count'])} ACKs, mean {lat['mean_ms']:.1f} ms, "
            f"half within {_ms(lat['p50_under_ms'] / 1000)}, "
            f"99 % within {_ms(lat['p99_under_ms'] / 1000)}"
        )
    if figures["last_message_at"]:
        ago = time.time() - figures["last_message_at"]
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(figures["last_message_at"]))
        label = "last message" if m["total"] else "started"
        lines.append(f"{label:<16} {at} ({ago:,.0f} s ago)")
    c = figures["connections"]
    lines.append(f"connections      {_n(c['open'])} open, {_n(c['refused'])} refused")
    q = figures["queue"]
    lines.append(
        f"queue            {_n(q.get('parse', 0))} being parsed, "
        f"{_n(q.get('commit', 0))} waiting for their commit"
    )
    k = figures["commits"]
    if k["count"]:
        lines.append(
            f"commits          {_n(k['count'])} transactions, {k['mean_batch']:.1f} messages "
            f"and {k['mean_ms']:.1f} ms each on average"
        )
    if "parse_workers" in figures:
        w = figures["parse_workers"]
        lines.append(f"parse workers    {_n(w['alive'])} alive, {_n(w['restarts'])} replaced")
    if "filedrop" in figures:
        f = figures["filedrop"]
        lines.append(
            f"file drop        {_n(f['waiting'])} waiting, {_n(f['done'])} done, "
            f"{_n(f['errored'])} to error/"
        )
        for box, held in sorted(f["held"].items()):
            lines.append(
                f"  held           {box}: its first file held for {held['seconds']:,.0f} s, "
                f"{_n(held['behind'])} file(s) behind it (the daemon's log names it)"
            )
    if "identities" in figures:
        i = figures["identities"]
        lines.append(
            f"identities       {_counts(i['by_status'])}; INS collisions {_n(i['ins_collisions'])}"
        )
    return lines


def _get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as exc:  # 503 from /readyz is an answer
        return exc.code, exc.read().decode("utf-8", errors="replace")


def fetch(host: str, port: int, timeout: float) -> tuple[dict[str, Any], Samples]:
    """/readyz and /metrics of the daemon at host:port; NoAnswer when nothing like pamfr
    answers there."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    try:
        code, body = _get(f"{base}/readyz", timeout)
        if code not in (200, 503):
            raise NoAnswer(f"{base} is not a pamfr HTTP port (HTTP {code} on /readyz)")
        readiness = json.loads(body)
        code, text = _get(f"{base}/metrics", timeout)
        if code != 200:
            raise NoAnswer(f"{base} is not a pamfr HTTP port (HTTP {code} on /metrics)")
        return readiness, Samples.parse(text)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NoAnswer(f"nothing answers at {base}: {reason}") from None
    except ValueError as exc:  # not JSON, not the Prometheus text format
        raise NoAnswer(f"{base} is not a pamfr HTTP port: {exc}") from None


def _target(obj: Context, http: str | None) -> tuple[str, int]:
    from pamfr.settings.config import split_listen

    listen = http
    if listen is None:
        listen = obj.settings(reading=True).http.listen
        if not listen:
            raise NoAnswer(
                "no HTTP port to ask: give --http HOST:PORT, or set [http] listen in the "
                "configuration (PAMFR_HTTP_LISTEN)"
            )
    try:
        host, port = split_listen(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--http") from None
    # A daemon listening on every address is asked on the loopback.
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host), port


@click.command()
@config_option
@click.option(
    "--http",
    metavar="HOST:PORT",
    help="The daemon's HTTP port (default: [http] listen of --config, or PAMFR_HTTP_LISTEN).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Readiness and figures as one JSON object.")
@click.pass_obj
def status(obj: Context, http: str | None, timeout: float, as_json: bool) -> None:
    """Readiness and counters of the running daemon, read from its HTTP port.

    Exit status 0 when it is ready, 1 when it answers but is not ready (the reason is
    printed), 2 when nothing answers there.
    """
    host, port = _target(obj, http)
    readiness, samples = fetch(host, port, timeout)
    figures = summary(samples)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if as_json:
        click.echo(json.dumps({"address": address, "readiness": readiness, **figures}, indent=2))
    else:
        for line in render(address, readiness, figures):
            click.echo(line)
    sys.exit(0 if readiness.get("status") == "ready" else 1)
