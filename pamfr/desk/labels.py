"""The words the desk shows its users (in French), and the ERR of an ACK in plain words."""

from __future__ import annotations

from pamfr.hl7.errors import ERROR_TEXTS

STATUS_LABELS = {
    "provisoire": "provisoire",
    "recuperee": "récupérée",
    "validee": "validée",
    "qualifiee": "qualifiée",
}
OUTCOME_LABELS = {
    "AA": "accepté",
    "AA-W": "accepté avec avertissements",
    "AE": "refusé (AE)",
    "AR": "rejeté (AR)",
}
SEVERITY_LABELS = {"E": "Erreur", "W": "Avertissement", "I": "Information"}

# HL7 table 0357, what each code means for the people who read the desk.
ERR_EXPLAINED = {
    0: "Information : le message a été appliqué, avec la remarque ci-dessous.",
    100: "Les segments ne sont pas dans l'ordre attendu par la structure du message.",
    101: "Un champ obligatoire est absent.",
    102: "Une valeur n'a pas le format attendu (par exemple une clé de NIR fausse).",
    103: "Une valeur n'est pas dans la table attendue (par exemple PID-32 ne dit pas VALI).",
    200: "Ce type de message n'est pas pris en charge.",
    201: "Cet événement n'est pas pris en charge.",
    202: "L'identifiant de traitement (MSH-11) n'est pas accepté par la configuration.",
    203: "Cette version HL7 n'est pas prise en charge.",
    204: "L'identifiant désigne un patient inconnu ou fusionné.",
    205: "Identifiant déjà utilisé : INS détenu par un autre patient actif, ou numéro de "
    "message (MSH-10) réutilisé avec un autre contenu.",
    206: "L'enregistrement était verrouillé.",
    207: "Erreur de l'application (base indisponible, émetteur non autorisé...) : le GAM "
    "doit renvoyer le message plus tard.",
}


def explain_err(code: str) -> str:
    try:
        number = int(code)
    except ValueError:
        return "Code inconnu."
    return ERR_EXPLAINED.get(number, ERROR_TEXTS.get(number, "Code inconnu."))


def ack_errors(ack_text: str) -> list[dict]:
    """The ERR segments of a stored ACK (its own separators), each with its explanation."""
    errs = []
    segments = ack_text.replace("\n", "\r").split("\r")
    separator = segments[0][3] if segments and len(segments[0]) > 3 else "|"
    component = segments[0][4] if segments and len(segments[0]) > 4 else "^"
    for segment in segments:
        if not segment.startswith("ERR"):
            continue
        fields = segment.split(separator) + [""] * 9
        code = fields[3].split(component)[0]
        errs.append(
            {
                "code": code,
                "place": fields[2],
                "severity": SEVERITY_LABELS.get(fields[4], fields[4]),
                "text": fields[8],
                "explained": explain_err(code),
            }
        )
    return errs
