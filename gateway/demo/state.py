"""In-memory state of the demo PMS: staff accounts, server-side sessions, reservations.

Everything is seeded from literal tables so that every run (and every test) sees the same
guests, cards and dates. Nothing is persisted: restarting the demo is a clean reset.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

#: Demo staff accounts as (name, password, role). Printed by the CLI; never use elsewhere.
DEMO_USERS: list[tuple[str, str, str]] = [
    ("alice", "alice-demo-pw", "front desk"),
    ("bob", "bob-demo-pw", "front desk"),
    ("manager", "manager-demo-pw", "manager"),
    ("support", "support-demo-pw", "vendor support"),
]

MANAGER = "manager"

# scrypt cost kept modest: the gateway's lockout tests send many wrong passwords.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}


def hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)


@dataclasses.dataclass(frozen=True)
class StaffAccount:
    name: str
    role: str
    salt: bytes
    password_hash: bytes

    def check_password(self, password: str) -> bool:
        return hmac.compare_digest(hash_password(password, self.salt), self.password_hash)


@functools.cache
def _staff_accounts() -> tuple[StaffAccount, ...]:
    """Hashed once per process: scrypt is deliberately slow and tests build many apps."""
    accounts = []
    for name, password, role in DEMO_USERS:
        salt = secrets.token_bytes(16)
        accounts.append(StaffAccount(name, role, salt, hash_password(password, salt)))
    return tuple(accounts)


@functools.cache
def _dummy_account() -> StaffAccount:
    """Checked for unknown names so that they cost as much time as a wrong password."""
    salt = secrets.token_bytes(16)
    return StaffAccount("", "", salt, hash_password(secrets.token_hex(16), salt))


@dataclasses.dataclass
class Session:
    sessid: str
    user: str
    role: str
    csrf_token: str
    created: float
    last_seen: float

    @property
    def session_hash(self) -> str:
        """What tests see instead of the cookie value itself."""
        return hashlib.sha256(self.sessid.encode()).hexdigest()[:16]

    @property
    def is_manager(self) -> bool:
        return self.role == MANAGER


@dataclasses.dataclass
class Reservation:
    id: int
    guest_name: str
    email: str
    phone: str
    card_number: str
    passport_number: str
    date_of_birth: dt.date
    arrival: dt.date
    departure: dt.date
    room: str
    status: str
    notes: str
    # The secret part of the guest's own link (confirmation e-mail): /guest/booking/<id>/<secret>.
    guest_secret: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def nights(self) -> int:
        return (self.departure - self.arrival).days


# The first night of the seeded calendar; a fixed date keeps pages and tests stable.
SEASON_START = dt.date(2025, 7, 1)
ROOMS = [f"{floor}{number:02d}" for floor in (1, 2, 3) for number in range(1, 11)]

# Guests: name, e-mail, phone (valid international numbers, fictional ranges where a
# country has them), card (well-known Luhn-valid test numbers), passport, date of birth,
# notes. Notes leak card and health data on purpose: that is what old PMSs look like.
# fmt: off
_GUESTS = [
    ("Oliver Bennett", "oliver.bennett@example.co.uk", "+44 20 7946 0018", "4111111111111111", "533401872", "1978-04-12", "Late arrival, around 23:00."),
    ("Amélie Laurent", "amelie.laurent@example.fr", "+33 1 99 00 12 34", "5555555555554444", "18AV52731", "1985-11-03", ""),
    ("Jonas Müller", "jonas.mueller@example.de", "+49 30 23125 017", "378282246310005", "C01X00T47", "1969-02-27", "Allergic to peanuts."),
    ("Tereza Nováková", "tereza.novakova@example.cz", "+420 601 123 456", "4012888888881881", "40128273", "1991-07-19", ""),
    ("Michael Carter", "m.carter@example.com", "+1 202 555 0143", "5105105105105100", "A47120931", "1974-09-08", "Corporate rate, invoice to employer."),
    ("Charlotte Evans", "charlotte.evans@example.co.uk", "+44 20 7946 0452", "4242424242424242", "509337214", "1988-01-30", ""),
    ("Louis Moreau", "louis.moreau@example.fr", "+33 6 12 34 56 78", "371449635398431", "15CD84310", "1979-06-14", "Guest asked us to keep card 4242424242424242 on file for incidentals."),
    ("Lena Schmidt", "lena.schmidt@example.de", "+49 152 28817386", "6011111111111117", "C4J7R2K95", "1995-12-05", "Wheelchair access needed."),
    ("Jan Dvořák", "jan.dvorak@example.cz", "+420 222 123 456", "3530111333300000", "39517264", "1965-03-22", ""),
    ("Emily Johnson", "emily.johnson@example.com", "+1 312 555 0178", "4000056655665556", "B90341275", "1993-08-11", "Honeymoon: champagne in room."),
    ("Harry Wilson", "harry.wilson@example.co.uk", "+44 20 7946 0771", "5200828282828210", "520118934", "1982-05-02", ""),
    ("Camille Dubois", "camille.dubois@example.fr", "+33 1 99 00 56 78", "4111111111111111", "19EF20457", "1990-10-17", "Diabetic, needs a fridge in the room."),
    ("Felix Wagner", "felix.wagner@example.de", "+49 30 23125 342", "5555555555554444", "C7T2L9M41", "1972-12-29", ""),
    ("Petra Svobodová", "petra.svobodova@example.cz", "+420 601 987 654", "378282246310005", "42075518", "1987-04-04", ""),
    ("Daniel Brooks", "daniel.brooks@example.com", "+1 415 555 0132", "4012888888881881", "C03865142", "1968-11-23", "Repeat guest, prefers high floor."),
    ("Sophie Taylor", "sophie.taylor@example.co.uk", "+44 20 7946 0925", "5105105105105100", "547290163", "1999-02-14", ""),
    ("Hugo Lefèvre", "hugo.lefevre@example.fr", "+33 6 98 76 54 32", "4242424242424242", "17GH66120", "1983-07-07", ""),
    ("Anna Becker", "anna.becker@example.de", "+49 152 28817412", "371449635398431", "C2P8W5N63", "1976-01-09", "Travelling with a guide dog."),
    ("Tomáš Procházka", "tomas.prochazka@example.cz", "+420 222 765 432", "6011111111111117", "38804127", "1994-05-26", ""),
    ("Jessica Miller", "jessica.miller@example.com", "+1 202 555 0187", "3530111333300000", "D55102846", "1986-03-15", ""),
    ("George Harris", "george.harris@example.co.uk", "+44 20 7946 0334", "4000056655665556", "561028447", "1959-09-30", "Pays cash; card only as guarantee."),
    ("Chloé Bernard", "chloe.bernard@example.fr", "+33 1 99 00 90 12", "5200828282828210", "20JK41873", "1997-12-01", ""),
    ("Maximilian Koch", "max.koch@example.de", "+49 30 23125 586", "4111111111111111", "C9V3H6Z28", "1981-08-18", ""),
    ("Klára Černá", "klara.cerna@example.cz", "+420 601 555 210", "5555555555554444", "41279305", "1989-10-10", "Early check-in requested."),
    ("Ryan Davis", "ryan.davis@example.com", "+1 312 555 0119", "378282246310005", "E12093746", "1971-06-21", ""),
]
# fmt: on

_STATUSES = ["New", "Confirmed", "Checked in", "Confirmed", "New", "Cancelled", "Confirmed"]


def seed_reservations() -> dict[int, Reservation]:
    reservations = {}
    for index, (name, email, phone, card, passport, dob, notes) in enumerate(_GUESTS):
        arrival = SEASON_START + dt.timedelta(days=(index * 3) % 14)
        reservation = Reservation(
            id=1001 + index,
            guest_name=name,
            email=email,
            phone=phone,
            card_number=card,
            passport_number=passport,
            date_of_birth=dt.date.fromisoformat(dob),
            arrival=arrival,
            departure=arrival + dt.timedelta(days=1 + index % 5),
            room=ROOMS[(index * 7) % len(ROOMS)],
            status=_STATUSES[index % len(_STATUSES)],
            notes=notes,
        )
        reservations[reservation.id] = reservation
    return reservations


class DemoState:
    """All mutable state of one demo PMS instance.

    `clock` is injectable so that tests can age sessions without sleeping.
    """

    def __init__(self, session_idle_seconds: float, clock: Callable[[], float] = time.time):
        self.session_idle_seconds = session_idle_seconds
        self.clock = clock
        self.accounts = {account.name: account for account in _staff_accounts()}
        self.sessions: dict[str, Session] = {}
        self.reservations = seed_reservations()
        # Signs the login-form CSRF tokens; per instance, so restarts invalidate open forms.
        self.secret = secrets.token_bytes(32)

    def authenticate(self, name: str, password: str) -> StaffAccount | None:
        # Like most PMSs, user names are not case-sensitive and stray spaces are forgiven.
        account = self.accounts.get(name.strip().lower())
        if account is None:
            _dummy_account().check_password(password)
            return None
        return account if account.check_password(password) else None

    def open_session(self, account: StaffAccount) -> Session:
        now = self.clock()
        session = Session(
            sessid=secrets.token_urlsafe(32),
            user=account.name,
            role=account.role,
            csrf_token=secrets.token_urlsafe(24),
            created=now,
            last_seen=now,
        )
        self.sessions[session.sessid] = session
        return session

    def touch_session(self, sessid: str | None) -> Session | None:
        """Look a session up and count this request as activity, like the old PMS does
        for every authenticated request (background polling included)."""
        session = self.sessions.get(sessid or "")
        if session is None:
            return None
        now = self.clock()
        if now - session.last_seen > self.session_idle_seconds:
            del self.sessions[session.sessid]
            return None
        session.last_seen = now
        return session

    def close_session(self, sessid: str | None) -> None:
        self.sessions.pop(sessid or "", None)

    def live_sessions(self) -> list[Session]:
        now = self.clock()
        for sessid, session in list(self.sessions.items()):
            if now - session.last_seen > self.session_idle_seconds:
                del self.sessions[sessid]
        return list(self.sessions.values())

    def login_csrf_token(self, prelogin: str) -> str:
        """The login form's token, bound to the browser's pre-login cookie."""
        return hmac.new(self.secret, b"login:" + prelogin.encode(), hashlib.sha256).hexdigest()

    # --- figures for the pages -------------------------------------------------------

    room_count = len(ROOMS)

    def new_bookings(self) -> int:
        """Bookings not yet confirmed to the guest: what the desk's poller counts."""
        return sum(1 for r in self.reservations.values() if r.status == "New")

    def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reservation in self.reservations.values():
            counts[reservation.status] = counts.get(reservation.status, 0) + 1
        return dict(sorted(counts.items()))

    def occupancy(self) -> list[tuple[dt.date, int]]:
        """Occupied rooms per night over the seeded season (cancellations excluded)."""
        booked = [r for r in self.reservations.values() if r.status != "Cancelled"]
        last = max(r.departure for r in booked)
        nights = []
        night = SEASON_START
        while night < last:
            nights.append((night, sum(1 for r in booked if r.arrival <= night < r.departure)))
            night += dt.timedelta(days=1)
        return nights
