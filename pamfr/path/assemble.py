"""The one place that builds the receiver with the operator's policy, for every door."""

from __future__ import annotations

from sqlalchemy import Engine

from pamfr.path.receiver import Receiver
from pamfr.settings.config import Settings


def build_receiver(engine: Engine, settings: Settings) -> Receiver:
    """The receiver of `serve`, `watch` and `replay --local`: the same checks and rules."""
    return Receiver(
        engine,
        processing_ids=settings.receiver.processing_ids,
        allowed_senders=settings.server.allowed_senders,
        default_charset=settings.hl7.default_charset,
        iti31_updates_identity=settings.hl7.iti31_updates_identity,
        reused_control_id=settings.hl7.reused_control_id,
        enhanced_ack=settings.hl7.enhanced_ack,
    )
