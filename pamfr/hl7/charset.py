"""MSH-18 character sets and the Python codecs that decode them."""

from __future__ import annotations

# Keys are MSH-18 values upper-cased with spaces removed; "" is plain ASCII.
_CODECS: dict[str, str] = {
    "": "ascii",
    "ASCII": "ascii",
    "8859/1": "iso-8859-1",
    "8859/15": "iso-8859-15",
    "UNICODEUTF-8": "utf-8",
    "UTF-8": "utf-8",
}


class UnknownCharset(ValueError):
    pass


def codec_for(msh18: str) -> str:
    """The Python codec for an MSH-18 value (its first repetition, as HL7 says)."""
    key = msh18.split("~", 1)[0].split("^", 1)[0].replace(" ", "").upper()
    try:
        return _CODECS[key]
    except KeyError:
        raise UnknownCharset(f"unsupported character set {msh18!r} in MSH-18") from None


def stored_text(raw: bytes, charset: str) -> str:
    """A stored message as text, in the character set its own MSH-18 names."""
    try:
        codec = codec_for(charset or "")
    except UnknownCharset:
        codec = "utf-8"
    if codec == "ascii":  # MSH-18 empty: ASCII by the standard, UTF-8 read as what it is
        codec = "utf-8"
    return raw.decode(codec, errors="replace")
