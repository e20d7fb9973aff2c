"""The [hl7] switches reach the receiver of a real `pamfr serve` from its configuration file."""

from __future__ import annotations

from pamfr.hl7.samples import Person, message
from tests.helpers import send, show_json, start_daemon


def test_hl7_section_of_the_configuration(sqlite_url, tmp_path):
    config = tmp_path / "pamfr.toml"
    config.write_text(
        '[hl7]\ndefault_charset = "8859/1"\niti31_updates_identity = true\n'
        'reused_control_id = "apply"\n'
    )
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", env={"PAMFR_CONFIG": str(config)})
    try:
        first = message("A01", Person("H1"), "H-1")
        later = message("A01", Person("H1", birth_name="MÉNARD"), "H-1")  # reused control id
        acks = send(daemon.port, [first, later.replace("|UNICODE UTF-8|", "||").encode("latin-1")])
    finally:
        assert daemon.stop() == 0
    assert [a.code for a in acks] == ["AA", "AA"]
    # 8859/1 default (a warning), the reused id applied (a warning), the A01 rewrote the name.
    assert sorted(zip(acks[1].err_codes, acks[1].err_locations, strict=True)) == [
        ("103", "MSH^1^18"),
        ("205", "MSH^1^10"),
    ]
    assert show_json(sqlite_url, "--ipp", "H1")["birth_name"] == "MÉNARD"
