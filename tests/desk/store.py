"""The store the desk's tests read: fed over real MLLP, it holds an INS collision, a doublon
pair, a merge, a link, an AE and an AR message, an INS removed, and a GAM name that is HTML."""

from __future__ import annotations

from dataclasses import dataclass

from pamfr.hl7.samples import Person, message, nir_with_key
from tests.helpers import pamfr_server, send

NIR_SHARED = nir_with_key("2800175123456")
NIR_REMOVED = nir_with_key("1850275123789")
SCRIPT_NAME = "<script>window.pwned=1</script>"
IMG_GIVEN = '"><img src=x onerror="window.pwned=2">'

COLLIDING_1 = Person(ipp="COL1", birth_name="COLLIN", given_names=("ANNE",), ins=NIR_SHARED)
COLLIDING_2 = Person(
    ipp="COL2", birth_name="COLLART", given_names=("BRUNO",), sex="M", ins=NIR_SHARED
)
DOUBLON_1 = Person(
    ipp="DBL1",
    birth_name="Lefèvre-Martin",
    given_names=("Zoé", "Anne"),
    birth_date="19800101",
    pid32=("PROV",),
)
DOUBLON_2 = Person(
    ipp="DBL2",
    birth_name="LEFEVRE MARTIN",
    given_names=("ZOE",),
    birth_date="19800101",
    pid32=("PROV",),
)
MERGED = Person(ipp="MRG1", birth_name="MERLE", given_names=("CLAIRE",), birth_date="19600101")
SURVIVOR = Person(ipp="MRG2", birth_name="MERLE", given_names=("CLAIRE",), birth_date="19600101")
LINKED_1 = Person(ipp="LNK1", birth_name="LIEN", given_names=("PAUL",), sex="M")
LINKED_2 = Person(ipp="LNK2", birth_name="LIEN", given_names=("PAUL",), sex="M")
QUALIFIED = Person(ipp="QUA1", birth_name="QUALIF", given_names=("JEAN",), sex="M", ins=NIR_REMOVED)
HOSTILE = Person(ipp="XSS1", birth_name=SCRIPT_NAME, given_names=(IMG_GIVEN,), pid32=("PROV",))
REFUSED = Person(ipp="AE01", birth_name="REFUS", given_names=("LUC",), sex="M")


@dataclass(frozen=True)
class Loaded:
    ae_control_id: str = "DESK-AE"
    ar_control_id: str = "DESK-AR"


def load(db_url: str) -> Loaded:
    """Feed the scenario through a real receiver (reused control ids refused)."""
    loaded = Loaded()
    messages = [
        message("A28", COLLIDING_1, "DESK-1"),
        message("A28", COLLIDING_2, "DESK-2"),
        message("A28", DOUBLON_1, "DESK-3"),
        message("A28", DOUBLON_2, "DESK-4"),
        message("A28", MERGED, "DESK-5"),
        message("A28", SURVIVOR, "DESK-6"),
        message("A40", SURVIVOR, "DESK-7", prior_ipp="MRG1"),
        message("A28", LINKED_1, "DESK-8"),
        message("A28", LINKED_2, "DESK-9"),
        message("A24", LINKED_1, "DESK-10", other=LINKED_2),
        message("A28", QUALIFIED, "DESK-11"),
        message("A31", Person(**{**QUALIFIED.__dict__, "pid32": ("PROV",)}), "DESK-12"),
        message("A28", HOSTILE, "DESK-13"),
        message("A28", REFUSED, loaded.ae_control_id),
        # the same control id with other content: AE 205 while reused ids are refused
        message("A31", Person(**{**REFUSED.__dict__, "given_names": ("LUCIEN",)}), "DESK-AE"),
        message("A99", REFUSED, loaded.ar_control_id),  # an event pamfr does not take: AR
    ]
    with pamfr_server(db_url) as server:
        acks = send(server.port, messages)
    codes = [a.code for a in acks]
    assert codes == ["AA"] * 14 + ["AE", "AR"], [(a.code, a.errs) for a in acks]
    return loaded
