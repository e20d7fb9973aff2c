"""PAM FR sample messages, shaped like the ANS examples: for tests, the benchmark and
`pamfr generate` (test sets for integration teams). The identities are synthetic."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from pamfr.identity.ins import nir_key

AUTHORITY = "CHU-X&1.2.250.1.999.1.1&ISO"
INS_TEST_OID = "1.2.250.1.213.1.4.10"


def nir_with_key(body13: str) -> str:
    return f"{body13}{nir_key(body13):02d}"


@dataclass
class Person:
    ipp: str
    birth_name: str = "PAT-TEST"
    given_names: tuple[str, ...] = ("DOMINIQUE",)
    used_name: str | None = None
    used_given_name: str | None = None
    birth_date: str = "19790328"
    sex: str = "F"
    insee: str | None = "63220"
    ins: str | None = None
    ins_oid: str = INS_TEST_OID
    pid32: tuple[str, ...] = ("VALI",)
    authority: str = AUTHORITY
    zfd5: str | None = "INSI"
    extra_ids: tuple[str, ...] = field(default_factory=tuple)

    def pid3(self) -> str:
        reps = [f"{self.ipp}^^^{self.authority}^PI"]
        if self.ins:
            reps.append(f"{self.ins}^^^ASIP-SANTE-INS-NIR&{self.ins_oid}&ISO^INS^^20101207")
        reps.extend(self.extra_ids)
        return "~".join(reps)

    def pid5(self) -> str:
        birth = f"{self.birth_name}^{self.given_names[0] if self.given_names else ''}^" + (
            " ".join(self.given_names) + "^^^^L"
        )
        if self.used_name:
            return f"{self.used_name}^{self.used_given_name or ''}^^^^^D~{birth}"
        return birth

    def pid(self, set_id: int = 1) -> str:
        fields = [""] * 33
        fields[0] = "PID"
        fields[1] = str(set_id)
        fields[3] = self.pid3()
        fields[5] = self.pid5()
        fields[7] = self.birth_date
        fields[8] = self.sex
        addresses = ["28 Av de Breteuil^^PARIS^^75007^FRA^H"]
        if self.insee:
            addresses.append(f"^^^^^^BDL^^{self.insee}")
        fields[11] = "~".join(addresses)
        fields[32] = "~".join(self.pid32)
        return "|".join(fields)


def msh(
    event: str,
    structure: str,
    control_id: str,
    charset: str = "UNICODE UTF-8",
    processing_id: str = "T",
) -> str:
    """MSH of a synthetic message: MSH-11 T (test), since its INS carry the test OID, which a
    production message (P) may not give a patient."""
    return (
        f"MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306111154||ADT^{event}^{structure}|{control_id}|"
        f"{processing_id}|"
        f"2.5^FRA^2.11|||||FRA|{charset}|FR||2.11^IHE_FRANCE-2.11-PAM"
    )


STRUCTURES = {
    "A28": "ADT_A05",
    "A31": "ADT_A05",
    "A40": "ADT_A39",
    "A47": "ADT_A30",
    "A24": "ADT_A24",
    "A37": "ADT_A37",
    "A08": "ADT_A01",
}


def message(
    event: str,
    person: Person,
    control_id: str,
    *,
    prior_ipp: str | None = None,
    other: Person | None = None,
    charset: str = "UNICODE UTF-8",
    sep: str = "\r",
) -> str:
    """One ER7 message: ITI-30 events as the profile says, the others shaped like ANS's A01."""
    structure = STRUCTURES.get(event, "ADT_A01")
    segs = [msh(event, structure, control_id, charset), "EVN||20240306111154||||20240306111154"]
    segs.append(person.pid())
    if event in ("A40", "A47"):
        segs.append(f"MRG|{prior_ipp}^^^{person.authority}^PI")
    elif event in ("A24", "A37"):
        assert other is not None
        segs.append(other.pid(2))
    elif event in ("A28", "A31"):
        segs.append("PV1||N")
    else:
        segs += [
            "PD1||U||||||||||N",
            "ROL||UC|ODRP|10000023084^AGNES^Isabelle^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"
            "^L^^^RPPS",
            "PV1|1|I|^^^CHU-X&000897406&M^O^^|R||||||||||||||||000897406^^^CHU-X&000897406&M"
            "^VN^^20210409|||N||||||||||||||4||||||||20240306110000|||||||V",
            "PV2|||||||CS|20240306100000|20240310080000|||Surveillance",
            "ZBE|312^CHU-X^000897406|20240306110000||INSERT|N||Chir V^^^^^CHU-X&000897406&N"
            "^UF^^^6268||HMS",
            "ZFA|ACTIF|20240306111154|||||||INO|20240306111154|IC|20240306111154",
            "ZFM|8|||",
        ]
    if person.zfd5 is not None and event not in ("A24", "A37", "A40", "A47"):
        segs.append(f"ZFD|||Y|N|{person.zfd5}|20211201||")
    return sep.join(segs) + sep


_NAMES = ["MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS"]
_GIVEN = ["JEAN", "MARIE", "PIERRE", "ANNE", "LOUIS", "CLAIRE", "PAUL", "JULIE"]
_USED = ["Lefèvre", "Gérard", "Hélène", "Noël", "Benoît"]


def random_person(rng: random.Random, ipp: str) -> Person:
    sex = rng.choice("MF")
    year = rng.randint(1930, 2020)
    month = rng.randint(1, 12)
    dept = rng.choice(["75", "63", "2A", "2B", "13", "69"])
    body = f"{1 if sex == 'M' else 2}{year % 100:02d}{month:02d}{dept}{rng.randint(1, 999):03d}"
    body += f"{rng.randint(1, 999):03d}"
    insee = f"{dept}{rng.randint(1, 999):03d}"
    accented = rng.random() < 0.3
    return Person(
        ipp=ipp,
        birth_name=rng.choice(_NAMES),
        given_names=tuple(rng.sample(_GIVEN, rng.randint(1, 3))),
        used_name=rng.choice(_USED) if accented else None,
        used_given_name=rng.choice(_GIVEN) if accented else None,
        birth_date=f"{year}{month:02d}{rng.randint(1, 28):02d}",
        sex=sex,
        insee=insee,
        ins=nir_with_key(body),
        pid32=("VALI",),
    )


def generate_mix(count: int, seed: int = 2575, prefix: str = "G") -> Iterator[str]:
    """About 50% A28, 30% A31, 15% A01, 5% A40; unique control ids and IPPs; fixed seed."""
    rng = random.Random(seed)
    known: list[Person] = []
    survivors: set[str] = set()
    for n in range(count):
        control_id = f"{prefix}{n:09d}"
        roll = rng.random()
        if roll < 0.5 or len(known) - len(survivors) < 4:
            person = random_person(rng, f"{prefix}P{n:09d}")
            known.append(person)
            yield message("A28", person, control_id)
        elif roll < 0.8:
            person = rng.choice(known)
            person.used_name = rng.choice(_USED)
            yield message("A31", person, control_id)
        elif roll < 0.95:
            yield message("A01", rng.choice(known), control_id)
        else:
            # A survivor is never merged later: the set stays valid when its messages are
            # spread over several connections and applied in another order.
            sources = [i for i, p in enumerate(known) if p.ipp not in survivors]
            source = known.pop(rng.choice(sources))
            target = rng.choice(known)
            survivors.add(target.ipp)
            yield message("A40", target, control_id, prior_ipp=source.ipp)
