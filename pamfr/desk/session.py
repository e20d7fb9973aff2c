"""Who is signed in to the desk: a signed session cookie naming one of the [http] tokens.

The cookie holds the token's name, a fingerprint of the token (a token changed or removed
under that name ends the session), and the session's CSRF token; it is signed with
itsdangerous and its timestamp gives the idle expiry (every answer renews it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "pamfr_desk"
SIGNIN_COOKIE = "pamfr_desk_signin"  # the sign-in form's CSRF token, before any session
SIGNIN_MAX_AGE = 3600


@dataclass(frozen=True, slots=True)
class Session:
    name: str  # the token's name, never the token
    csrf: str
    operator: bool


class Sessions:
    def __init__(
        self,
        tokens: Mapping[str, str],
        operators: list[str],
        secret: str | None,
        idle_seconds: float,
    ) -> None:
        self.tokens = dict(tokens)
        self.operators = frozenset(operators)
        self._secret = (secret or secrets.token_hex(32)).encode()
        self._serializer = URLSafeTimedSerializer(self._secret, salt="pamfr-desk-session")
        self._signin = URLSafeTimedSerializer(self._secret, salt="pamfr-desk-signin")
        self.idle_seconds = idle_seconds
        # CSRF tokens of the sessions signed out, with when their last cookie expires: a copy
        # of the cookie is refused until then (in memory: a restart forgets them).
        self._ended: dict[str, float] = {}

    def end(self, session: Session) -> None:
        """Sign `session` out: its cookie, or any copy of it, no longer gets in."""
        now = time.monotonic()
        self._ended = {c: until for c, until in self._ended.items() if until > now}
        self._ended[session.csrf] = now + self.idle_seconds

    def _fingerprint(self, token: str) -> str:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).hexdigest()[:32]

    def name_of(self, presented: str) -> str | None:
        """The name of the token presented, every one compared (no timing hint)."""
        found = None
        for name, token in self.tokens.items():
            if hmac.compare_digest(presented.strip().encode(), token.encode()):
                found = name
        return found

    def open(self, name: str) -> tuple[Session, str]:
        """A new session for this token name, and its cookie value."""
        session = Session(name, secrets.token_urlsafe(32), name in self.operators)
        return session, self.cookie(session)

    def cookie(self, session: Session) -> str:
        token = self.tokens[session.name]
        return self._serializer.dumps(
            {"n": session.name, "f": self._fingerprint(token), "c": session.csrf}
        )

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None: forged, expired, or its token gone."""
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.idle_seconds)
        except BadSignature:  # SignatureExpired is one
            return None
        if not isinstance(data, dict):
            return None
        name, token = data.get("n"), self.tokens.get(str(data.get("n")))
        if token is None or not hmac.compare_digest(
            str(data.get("f", "")), self._fingerprint(token)
        ):
            return None
        csrf = str(data.get("c", ""))
        if csrf in self._ended:
            return None
        return Session(str(name), csrf, name in self.operators)

    def signin_csrf(self) -> tuple[str, str]:
        """A CSRF token for the sign-in form, and the cookie value that vouches for it."""
        value = secrets.token_urlsafe(32)
        return value, self._signin.dumps(value)

    def signin_csrf_ok(self, cookie: str | None, presented: str) -> bool:
        if not cookie or not presented:
            return False
        try:
            value = self._signin.loads(cookie, max_age=SIGNIN_MAX_AGE)
        except BadSignature:
            return False
        return hmac.compare_digest(str(value).encode(), presented.encode())


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), presented.encode())
