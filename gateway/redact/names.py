"""Guest names, learnt from the message's own structure rather than guessed by NER.

A notification says who it is for: the display name in `To:`, a provider API's name
field, the salutation ("Dear Ms Nováková", "Sehr geehrter Herr Müller"), a labelled line
("Guest: Jana Nováková"). Those names are then removed wherever they occur, in any
inflected form (see `detectors.terms`). Knowing the name beats recognising names: it
catches "Rose" and "Hope" and leaves "Hotel Belvedere" alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from email.header import decode_header, make_header
from email.utils import getaddresses

TITLES: frozenset[str] = frozenset(
    """
    mr mrs ms miss mx dr prof sir dame lady lord
    m mme mlle monsieur madame mademoiselle
    herr frau fräulein
    pan paní pane pana panu panem slečna slečno slečny ing mudr mgr bc phdr judr
    pán pána pánovi pani panie panią państwo
    signor signore signora signorina sig sigra dott dottssa egr
    señor señora señorita sr sra srta don doña dña
    heer mevrouw mevr mw dhr meneer juffrouw
    senhor senhora sra
    """.split()
)
"""Words that precede a name but are not part of it."""

PARTICLES: frozenset[str] = frozenset(
    "von van der den de del della di da du la le des y zu ten ter af av".split()
)
"""Lower-case surname particles: too common as words to be matched on their own."""

STRONG_TITLES: frozenset[str] = frozenset(
    """
    mr mrs ms miss mx dr
    mme mlle monsieur madame mademoiselle
    herr frau
    pan paní pane pana panu panem slečna slečno pán pána pánovi pani panie panią
    signor signora signorina sig sigra
    señor señora señorita sr sra srta
    heer mevrouw mevr dhr meneer senhor senhora
    """.split()
)
"""Titles that announce a name wherever they stand ("pro paní Novákovou",
"we found it in Mr Brooks's room"), not only after a greeting."""

_CONNECTORS: frozenset[str] = frozenset("and & und et e y i en a".split())
"""'Mr and Mrs de la Cruz': words between two titles."""

# Capitalised words that follow a greeting without being a name.
_NOT_NAMES: frozenset[str] = frozenset(
    """
    guest guests customer customers client clients cliente clientes valued member members
    team colleague colleagues patient patients all everyone friend friends there
    your you thank thanks
    votre vos chers chère cher voyageur voyageurs merci
    damen herren gast gäste kunde kundin kunden patientin zusammen ihre ihr danke
    hoste hosté hosty klient klientko klientka klienti pacient pacientko pacientka
    vaše váš vás děkujeme
    gentile gentili ospite ospiti signori cliente grazie
    estimado estimada huésped huéspedes gracias
    gast gasten klant heer mevrouw dank
    gość goście goscie klient klientka państwo dziękujemy
    hosť hostia klientka ďakujeme
    hotel reception rezeption recepce réception spa team
    services service relations wifi wi-fi house list room rooms
    """.split()
)

_GREETING = re.compile(
    r"(?i)(?<!\w)(?:dear|hello|hi|hey|good\s+(?:morning|afternoon|evening)|"
    r"bonjour|bonsoir|cher|chère|salut|"
    r"sehr\s+geehrte[rs]?|liebe[rs]?|hallo|guten\s+(?:tag|morgen|abend)|"
    r"vážen[áýé]|mil[áýé]|dobrý\s+den|dobrý\s+večer|ahoj|zdravím|"
    r"grüß\s+gott|grüezi|servus|moin|"
    r"dobrý\s+deň|dobr[ýy]\s+de[nň]|dobr[ýy]\s+ve[cč]er|v[aá][zž]en[aáyýeé]|mil[aáyýeé]|"
    r"gentile|gentili|egregi[oa]|car[oai]|buongiorno|buonasera|salve|ciao|"
    r"estimad[oa]s?|querid[oa]s?|hola|buen[oa]s\s+(?:días|dias|tardes|noches)|"
    r"beste|geachte|lieve|goedemorgen|goedemiddag|goedenavond|hoi|"
    r"szanown[ayi]|drog[ia]|dzień\s+dobry|dzien\s+dobry|witam|cześć|"
    r"prezado|prezada|olá|bom\s+dia|boa\s+tarde|"
    r"(?<![^\n])(?:morning|evening|afternoon))(?!\w)"
)
_LABEL = re.compile(
    r"(?im)^[ \t>*-]*(?:guests?(?:\s+names?)?|full\s+name|name|patients?|clients?|booked\s+by|"
    r"reserved\s+by|nom(?:\s+du\s+client)?|client\(e\)|réservé\s+par|patient\(e\)|"
    r"gast|gäste|gastname|name\s+des\s+gastes|gebucht\s+von|patient(?:in)?|"
    r"host|hosté|jméno(?:\s+hosta)?|jméno\s+a\s+příjmení|pacient(?:ka)?|klient(?:ka)?|"
    r"ospite|nome(?:\s+e\s+cognome)?|huésped|nombre(?:\s+y\s+apellidos?)?|titular|"
    r"naam|gast|gość|imię\s+i\s+nazwisko|hosť|meno(?:\s+a\s+priezvisko)?)"
    r"(?:[ \t]*:[ \t]*|\t+|[ \t]*\.{3,}[ \t]*)"  # "Name: ", a table cell, "Name ..... "
)
# "Guest Liam Murphy, born ...": a guest word without a colon, before a full name.
_BARE_LABEL = re.compile(
    r"(?i)(?<![\w-])(?:guest|gast|ospite|huésped|gość|host|hosť|patient|pacient)[ \t]+"
    r"(?=[^\W\d_][\w'’\-]*[ \t]+(?:(?:" + "|".join(sorted(PARTICLES)) + r")[ \t]+)*[A-ZÀ-Ž])"
)
_TOKEN = re.compile(r"[ \t]*([^\W\d_][\w'’\-]*\.?)")
_LIST_SEPARATOR = re.compile(r"(?i)[ \t]*(?:,|&|\band\b|\bet\b|\bund\b|\ba\b)[ \t]*")
_MAX_PARTS = 4


def _is_title(word: str) -> bool:
    return word.rstrip(".").lower() in TITLES


def _take_name(text: str, pos: int, title_required: bool) -> tuple[str | None, int]:
    """Read one name (optional titles, then capitalised words) starting at `pos`."""
    parts: list[str] = []
    saw_title = False
    while len(parts) < _MAX_PARTS:
        match = _TOKEN.match(text, pos)
        if match is None:
            break
        word = match.group(1)
        bare = word.rstrip(".")
        if not parts and _is_title(word):
            saw_title = True
            pos = match.end()
            continue
        if not parts and saw_title and bare.lower() in _CONNECTORS:
            following = _TOKEN.match(text, match.end())
            if following and _is_title(following.group(1)):
                pos = match.end()
                continue
        if bare.lower() in PARTICLES and (parts or _particles_lead(text, match.start())):
            parts.append(bare)
            pos = match.end()
            continue
        if not bare[:1].isupper() or bare.lower() in _NOT_NAMES or _is_title(word):
            break
        parts.append(bare)
        pos = match.end()
        if word.endswith(".") and len(bare) > 1:
            break  # end of sentence
    while parts and parts[-1].lower() in PARTICLES:
        parts.pop()
    if not parts or (title_required and not saw_title):
        return None, pos
    return " ".join(parts), pos


def _particles_lead(text: str, pos: int) -> bool:
    """'de la Cruz', 'van der Berg': lower-case particles followed by a capitalised word."""
    while True:
        match = _TOKEN.match(text, pos)
        if match is None:
            return False
        word = match.group(1).rstrip(".")
        if word.lower() not in PARTICLES:
            return word[:1].isupper() and word.lower() not in _NOT_NAMES
        pos = match.end()


_TITLE_WORD = re.compile(
    r"(?i)(?<![\w.])(?:" + "|".join(sorted(map(re.escape, STRONG_TITLES), key=len, reverse=True))
    + r")\.?(?=[ \t\u00a0]+(?:\w))"
)


# "with Dr Harrison", "bei Frau Krause": after these, a title names the staff member
# who gives the service, not the guest.
_STAFF_BEFORE = re.compile(
    r"(?i)(?<!\w)(?:with|by|bei|mit|von|avec|par|chez|con|da|u|s|se|z|ze|door|met|bij|"
    r"przez|therapist|therapeut(?:in)?|thérapeute|terapeut(?:ka)?)[ \t]+$"
)


def _after_titles(text: str) -> Iterator[str]:
    """Names after a title anywhere ("pro paní Novákovou", "Mr. Brooks's wallet")."""
    for match in _TITLE_WORD.finditer(text):
        word = match.group().rstrip(".")
        if len(word) <= 2 and not word[:1].isupper():
            continue  # "sr", "mr" in lower case are rarely titles
        if _STAFF_BEFORE.search(text[max(0, match.start() - 16) : match.start()]):
            continue
        name, _ = _take_name(text, match.start(), title_required=True)
        if name:
            yield name


def _after_greetings(text: str) -> Iterator[str]:
    for match in _GREETING.finditer(text):
        pos = match.end()
        title_required = False
        comma = re.match(r"[ \t]*,", text[pos:])
        if comma:
            # "Dobrý den, paní Nováková" names someone; "Dobrý den, Vaše rezervace" does not.
            pos += comma.end()
            title_required = True
        name, _ = _take_name(text, pos, title_required)
        if name:
            yield name


def _after_bare_labels(text: str) -> Iterator[str]:
    for match in _BARE_LABEL.finditer(text):
        name, _ = _take_name(text, match.end(), title_required=False)
        if name and " " in name:
            yield name


def _after_labels(text: str) -> Iterator[str]:
    for match in _LABEL.finditer(text):
        pos = match.end()
        while True:
            name, pos = _take_name(text, pos, title_required=False)
            if not name:
                break
            yield name
            separator = _LIST_SEPARATOR.match(text, pos)
            if separator is None:
                break
            pos = separator.end()


def names_in_text(text: str) -> list[str]:
    """Names the text itself announces: after a greeting, or on a labelled line."""
    found = [*_after_greetings(text), *_after_labels(text), *_after_titles(text),
             *_after_bare_labels(text)]
    return list(dict.fromkeys(found))


def decode_words(value: str) -> str:
    """A header value with RFC 2047 encoded words decoded ('=?utf-8?q?...?=')."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def display_names(header_values: Iterable[str]) -> list[str]:
    """Display names in address headers (`"Jana Nováková" <jana@example.cz>`)."""
    names = []
    for display, _address in getaddresses([decode_words(v) for v in header_values]):
        display = display.strip().strip('"').strip()
        if display and "@" not in display:
            names.append(display)
    return names


_PARTICLE_PHRASE = re.compile(
    r"(?i)(?<!\w)(?:(?:" + "|".join(sorted(PARTICLES, key=len, reverse=True))
    + r")\s+)+[^\W\d_][\w'’\-]*"
)


def name_parts(names: Sequence[str]) -> tuple[str, ...]:
    """The matchable parts of full names: titles, particles and initials left out.

    "Ms Jana Nováková" -> ("Jana", "Nováková"); "Nováková, Jana" -> the same.
    """
    parts: set[str] = set()
    for name in names:
        # Multi-word surnames ("Van der Berg", "de la Cruz") are also one phrase, so the
        # particles go with the surname they belong to.
        for match in _PARTICLE_PHRASE.finditer(name):
            parts.add(match.group().strip())
        for word in re.split(r"[\s,;/]+", name):
            bare = word.strip(".'’\"()")
            if (
                len(bare) >= 2
                and any(c.isalpha() for c in bare)
                and not _is_title(bare)
                and bare.lower() not in PARTICLES
            ):
                parts.add(bare)
    return tuple(sorted(parts))
