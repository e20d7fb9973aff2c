"""The tables (SQLAlchemy Core); the Alembic migrations in migrations/ create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()
# Byte order on PostgreSQL too, so that a prefix is a range of the index whatever the
# database's collation (SQLite compares bytes already).
SEARCH_KEY = Text().with_variant(Text(collation="C"), "postgresql")

# Every frame received, whatever its fate, with the ACK that answered it.
message = Table(
    "message",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("door", String(16), nullable=False),  # mllp, file, replay
    Column("peer", String(255), nullable=False, server_default=""),
    Column("sending_app", String(255), nullable=False, server_default=""),
    Column("sending_facility", String(255), nullable=False, server_default=""),
    Column("control_id", String(255), nullable=False, server_default=""),
    Column("message_type", String(16), nullable=False, server_default=""),
    Column("event", String(16), nullable=False, server_default=""),
    Column("charset", String(64), nullable=False, server_default=""),
    Column("raw", LargeBinary, nullable=False),
    Column("raw_size", Integer, nullable=False),  # larger than len(raw) when a frame was cut
    Column("outcome", String(2), nullable=False),  # AA, AE, AR (CA/CE/CR are sent, AA/AE/AR kept)
    Column("error_text", Text, nullable=True),
    Column("ack", LargeBinary, nullable=True),
    # sending_app|sending_facility|control_id of a message whose outcome is final; NULL otherwise
    Column("dedup_key", String(800), nullable=True, unique=True),
    Column("duplicate_of", Integer, ForeignKey("message.id"), nullable=True),
    Column("duration_ms", Float, nullable=True),
    Column("warnings", Text, nullable=True),  # the ERRs of severity W, as error_text says errors
    Column("err_codes", String(255), nullable=True),  # every ERR code, space separated
    Column("content_sha256", String(64), nullable=True),  # tells a resend from a reused id
    Column("reprocess_of", Integer, nullable=True),  # the message a reprocessed one repeats
    Column("raw_purged_at", DateTime(timezone=True), nullable=True),  # raw emptied by retention
)
Index("ix_message_outcome_id", message.c.outcome, message.c.id)
Index("ix_message_received_at", message.c.received_at)

patient = Table(
    "patient",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("merged_into", Integer, ForeignKey("patient.id"), nullable=True),
    Column("birth_name", Text),
    Column("first_given_name", Text),
    Column("birth_given_names", Text),  # space separated, in order
    Column("used_name", Text),
    Column("used_given_name", Text),
    Column("birth_date", String(10)),  # YYYY, YYYY-MM or YYYY-MM-DD
    Column("sex", String(1)),
    Column("birth_place_insee", String(5)),
    Column("ins_value", String(15)),
    Column("ins_oid", String(64)),
    Column("status", String(16), nullable=False, server_default="provisoire"),
    Column("attributes", Text, nullable=False, server_default=""),  # space separated
    Column("other_status_codes", Text, nullable=False, server_default=""),
    Column("identity_mode", String(16)),  # ZFD-5
    Column("insi_query_date", String(32)),  # ZFD-6
    Column("identity_document", String(16)),  # ZFD-7
    # The INS is also held by another active patient: usable on neither until resolved.
    Column("ins_collision", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The names FHIR searches, folded (pamfr.identity.names.fold; written with them by
    # pamfr.store.namekeys): a prefix search is a range on one index each.
    Column("birth_name_key", SEARCH_KEY),
    Column("used_name_key", SEARCH_KEY),
    Column("first_given_key", SEARCH_KEY),
    Column("used_given_key", SEARCH_KEY),
)
# The active holders of an INS (the collision rule) in one look-up; also a look-up by INS.
Index("ix_patient_ins_value_active", patient.c.ins_value, patient.c.active)
Index("ix_patient_merged_into", patient.c.merged_into)  # a merge re-points earlier merges
Index("ix_patient_birth_name", patient.c.birth_name)
for _key in ("birth_name_key", "used_name_key", "first_given_key", "used_given_key"):
    Index(f"ix_patient_{_key}", patient.c[_key])
# The /metrics scrape counts active identities by status and INS collision from it alone.
Index("ix_patient_active_status", patient.c.active, patient.c.status, patient.c.ins_collision)

identifier = Table(
    "identifier",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False, index=True),
    Column("value", String(255), nullable=False),
    Column("type", String(16), nullable=False),
    Column("authority", String(255), nullable=False, server_default=""),
    Column("oid", String(255), nullable=False, server_default=""),
    Column("authority_key", String(255), nullable=False),  # oid, else authority
)
# An IPP belongs to one patient; other identifier types (NH, INS...) may be shared.
Index(
    "ux_identifier_ipp",
    identifier.c.authority_key,
    identifier.c.value,
    unique=True,
    sqlite_where=identifier.c.type == "PI",
    postgresql_where=identifier.c.type == "PI",
)
Index("ix_identifier_lookup", identifier.c.authority_key, identifier.c.value, identifier.c.type)

# Links are recorded between identifiers, so they can exist before their patients do.
patient_link = Table(
    "patient_link",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("a_authority_key", String(255), nullable=False),
    Column("a_value", String(255), nullable=False),
    Column("b_authority_key", String(255), nullable=False),
    Column("b_value", String(255), nullable=False),
    Column("message_id", Integer, ForeignKey("message.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index(
    "ux_patient_link_pair",
    patient_link.c.a_authority_key,
    patient_link.c.a_value,
    patient_link.c.b_authority_key,
    patient_link.c.b_value,
    unique=True,
)

history = Table(
    "patient_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("message_id", Integer, ForeignKey("message.id"), nullable=False),
    Column("control_id", String(255), nullable=False, server_default=""),
    Column("event", String(16), nullable=False, server_default=""),
    Column("operation", String(16), nullable=False),
    Column("changes", Text, nullable=False),  # JSON {field: [old, new]}
    Column("notes", Text, nullable=True),  # JSON [{"code", "text"}]: what was dropped and why
)

# Assigning authorities named with both namespace (CX-4.1) and OID (CX-4.2): a later message
# naming one by namespace only designates the same authority.
authority = Table(
    "authority",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("namespace", String(255), nullable=False, unique=True),
    Column("oid", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The change feed (transactional outbox): one row per identity event, written in the
# transaction of the message that made the change. Ids are handed out in commit order
# (pamfr/store/outbox.py), so a reader resuming after id N misses nothing.
event = Table(
    "event",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("type", String(32), nullable=False),
    Column("message_id", Integer, ForeignKey("message.id"), nullable=False),
    Column("control_id", String(255), nullable=False, server_default=""),
    Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False),
    Column("other_patient_id", Integer, nullable=True),  # merge survivor, link peer...
    Column("version_id", String(32), nullable=False),  # the patient's FHIR versionId
    Column("detail", Text, nullable=False),  # JSON, identifiers and codes only
    sqlite_autoincrement=True,  # an id is never handed out twice, even after a delete
)

# Where each webhook subscriber ([[webhooks]] name) stands in the feed.
webhook_cursor = Table(
    "webhook_cursor",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("last_id", BigInteger, nullable=False, server_default="0"),  # last event delivered
    Column("failures", Integer, nullable=False, server_default="0"),  # consecutive
    Column("parked_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=True),
)

# The identity-vigilance desk: who viewed which patient's data, exported or acted (the token's
# name and the internal ids, never patient data), and the pairs judged "not a doublon".
desk_access = Table(
    "desk_access",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("token_name", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("patient_id", Integer, nullable=True),
    Column("message_id", Integer, nullable=True),
    Column("detail", String(255), nullable=False, server_default=""),
)

doublon_decision = Table(
    "doublon_decision",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_a", Integer, ForeignKey("patient.id"), nullable=False),  # the smaller id
    Column("patient_b", Integer, ForeignKey("patient.id"), nullable=False),
    Column("decided_by", String(64), nullable=False),  # the token's name
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
)
Index(
    "ux_doublon_decision_pair",
    doublon_decision.c.patient_a,
    doublon_decision.c.patient_b,
    unique=True,
)
Index("ix_desk_access_patient", desk_access.c.patient_id)
