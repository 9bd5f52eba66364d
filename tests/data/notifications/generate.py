"""Generate the labelled notification corpus (corpus.jsonl) used by the redaction bench.

    python tests/data/notifications/generate.py            # rewrite corpus.jsonl
    python tests/data/notifications/generate.py --check    # fail if it would change

Besides the generated messages, corpus.jsonl carries the hand-written ones from
handwritten.txt (`"source": "handwritten"`): free-form messages written after the
detectors were developed, kept apart in the bench as a check that the figures are not
an artefact of the templates.

Deterministic (seeded). Messages are SMS and e-mail notifications from hotels and
clinics in English, French, German and Czech: confirmations, reminders, cancellations,
invoices, pre-check-in requests. Every sensitive value is labelled with its span and
type (card, iban, email, phone, passport, date_of_birth, name, service); everything
else is a negative, including the hard ones a notification is full of: booking
references of card length that fail Luhn, references that would dial as phone numbers,
room numbers, prices, arrival and appointment dates, masked cards, staff names.

Ground truth comes from how the values are made (a real card number is Luhn-valid with
an issuer prefix, a real IBAN passes mod 97, a real mobile number is valid in its
country), never from running the redaction detectors. Names are given in the case a
sentence needs (Czech vocative "Jano", dative "Novákové", German genitive "Müllers"),
as typed by hand in the tables below; SMS in French, German and Czech sometimes lose
their diacritics, as GSM messages do.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
from stdnum import iban as stdnum_iban

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.jsonl"
SEED = 20261124
PER_LANGUAGE = 120

# ----------------------------------------------------------------------------- people


@dataclass(frozen=True)
class Person:
    """A guest, with the name forms sentences need (missing forms = nominative)."""

    first: str
    last: str
    female: bool
    forms: dict[str, str] = field(default_factory=dict)
    country: str = "GB"

    def form(self, key: str) -> str:
        if key in self.forms:
            return self.forms[key]
        return {"first": self.first, "last": self.last}.get(key.split("_")[0], self.last)


def _cz(first: str, last: str, female: bool, **forms: str) -> Person:
    return Person(first, last, female, forms, "CZ")


PEOPLE: dict[str, list[Person]] = {
    "en": [
        Person("Oliver", "Bennett", False),
        Person("Emily", "Clarke", True),
        Person("James", "O'Connor", False),
        Person("Sarah", "Thompson", True),
        Person("Mohammed", "Khan", False),
        Person("Priya", "Patel", True),
        Person("Hannah", "Rose", True),
        Person("Wei", "Li", False),
        Person("Daniel", "Hughes", False),
        Person("Charlotte", "Evans", True),
        Person("William", "Taylor", False),
        Person("Siobhan", "McAllister", True),
        Person("Grace", "Okafor", True, country="IE"),
        Person("Michael", "Brown", False, country="US"),
    ],
    "fr": [
        Person("Jean", "Dupont", False, country="FR"),
        Person("Marie-Claire", "Lefèvre", True, country="FR"),
        Person("François", "Rousseau", False, country="FR"),
        Person("Élodie", "Moreau", True, country="FR"),
        Person("Camille", "Bernard", True, country="FR"),
        Person("Nathalie", "Girard", True, country="FR"),
        Person("Luc", "Fontaine", False, country="FR"),
        Person("Sophie", "Laurent", True, country="BE"),
        Person("Hélène", "Mercier", True, country="FR"),
        Person("Antoine", "Roux", False, country="CH"),
        Person("Thierry", "Gauthier", False, country="FR"),
    ],
    "de": [
        Person("Thomas", "Müller", False, {"last_gen": "Müllers"}, "DE"),
        Person("Anna", "Schmidt", True, {"last_gen": "Schmidts"}, "DE"),
        Person("Jürgen", "Weiß", False, {"last_gen": "Weiß'"}, "DE"),
        Person("Katharina", "Becker", True, {"last_gen": "Beckers"}, "DE"),
        Person("Lukas", "Schneider", False, {"last_gen": "Schneiders"}, "AT"),
        Person("Sabine", "Fischer", True, {"last_gen": "Fischers"}, "DE"),
        Person("Hans-Peter", "Wagner", False, {"last_gen": "Wagners"}, "DE"),
        Person("Claudia", "Hoffmann", True, {"last_gen": "Hoffmanns"}, "CH"),
        Person("Stefan", "Schäfer", False, {"last_gen": "Schäfers"}, "DE"),
        Person("Lena", "Zimmermann", True, {"last_gen": "Zimmermanns"}, "AT"),
    ],
    "cs": [
        _cz("Jana", "Nováková", True, first_voc="Jano", first_dat="Janě",
            last_dat="Novákové", last_acc="Novákovou", last_gen="Novákové"),
        _cz("Petra", "Svobodová", True, first_voc="Petro", first_dat="Petře",
            last_dat="Svobodové", last_acc="Svobodovou", last_gen="Svobodové"),
        _cz("Lucie", "Dvořáková", True, first_voc="Lucie", first_dat="Lucii",
            last_dat="Dvořákové", last_acc="Dvořákovou", last_gen="Dvořákové"),
        _cz("Tereza", "Černá", True, first_voc="Terezo", first_dat="Tereze",
            last_dat="Černé", last_acc="Černou", last_gen="Černé"),
        _cz("Kateřina", "Procházková", True, first_voc="Kateřino", first_dat="Kateřině",
            last_dat="Procházkové", last_acc="Procházkovou", last_gen="Procházkové"),
        _cz("Markéta", "Veselá", True, first_voc="Markéto", first_dat="Markétě",
            last_dat="Veselé", last_acc="Veselou", last_gen="Veselé"),
        _cz("Petr", "Novák", False, first_voc="Petře", first_dat="Petrovi",
            last_voc="Nováku", last_dat="Novákovi", last_acc="Nováka", last_gen="Nováka"),
        _cz("Jiří", "Dvořák", False, first_voc="Jiří", first_dat="Jiřímu",
            last_voc="Dvořáku", last_dat="Dvořákovi", last_acc="Dvořáka", last_gen="Dvořáka"),
        _cz("Tomáš", "Svoboda", False, first_voc="Tomáši", first_dat="Tomášovi",
            last_voc="Svobodo", last_dat="Svobodovi", last_acc="Svobodu", last_gen="Svobody"),
        _cz("Marek", "Černý", False, first_voc="Marku", first_dat="Markovi",
            last_voc="Černý", last_dat="Černému", last_acc="Černého", last_gen="Černého"),
        _cz("Pavel", "Horák", False, first_voc="Pavle", first_dat="Pavlovi",
            last_voc="Horáku", last_dat="Horákovi", last_acc="Horáka", last_gen="Horáka"),
        _cz("Lukáš", "Král", False, first_voc="Lukáši", first_dat="Lukášovi",
            last_voc="Králi", last_dat="Královi", last_acc="Krále", last_gen="Krále"),
        _cz("Martin", "Kučera", False, first_voc="Martine", first_dat="Martinovi",
            last_voc="Kučero", last_dat="Kučerovi", last_acc="Kučeru", last_gen="Kučery"),
        _cz("Jan", "Veselý", False, first_voc="Jane", first_dat="Janovi",
            last_voc="Veselý", last_dat="Veselému", last_acc="Veselého", last_gen="Veselého"),
    ],
}

CZECH_FIRST_ACCUSATIVE = {
    "Jana": "Janu", "Petra": "Petru", "Lucie": "Lucii", "Tereza": "Terezu", "Kateřina": "Kateřinu",
    "Markéta": "Markétu", "Petr": "Petra", "Jiří": "Jiřího", "Tomáš": "Tomáše", "Marek": "Marka",
    "Pavel": "Pavla", "Lukáš": "Lukáše", "Martin": "Martina", "Jan": "Jana",
}

STAFF = {
    "en": ["Dr Patel-Shah", "Tom", "Dr Harrison", "Megan", "Sister Boyle"],
    "fr": ["Dr Lambert", "Marie", "Dr Chevalier", "Julien"],
    "de": ["Dr. Weber", "Frau Krause", "Dr. Hartmann", "Jonas"],
    "cs": ["MUDr. Novotná", "Eva", "MUDr. Kolář", "Zdeněk"],
}
HOTELS = {
    "en": ["Hotel Belvedere London", "The Kensington Arms", "Harbour View Hotel"],
    "fr": ["Hôtel Belle Époque", "Hôtel du Parc", "Hôtel des Arts Lyon"],
    "de": ["Hotel Alpenblick", "Parkhotel Sonnenhof", "Hotel Zur Post"],
    "cs": ["Hotel Zlatá Husa", "Hotel U Zlaté studně", "Pension Modrá Hvězda"],
}
CLINICS = {
    "en": ["Harley Street Wellness Clinic", "Riverside Physio & Spa"],
    "fr": ["Clinique Saint-Michel", "Centre Thermal des Vosges"],
    "de": ["Praxis am Markt", "Kurhaus Bad Sonnental"],
    "cs": ["Klinika Vital", "Lázně Bělá"],
}
DOMAINS = {"en": "belvedere.example", "fr": "belle-epoque.example",
           "de": "alpenblick.example", "cs": "zlatahusa.example"}
MAIL_PROVIDERS = {
    "en": ["gmail.com", "outlook.com", "btinternet.com", "yahoo.co.uk"],
    "fr": ["orange.fr", "free.fr", "gmail.com", "laposte.net"],
    "de": ["web.de", "gmx.de", "t-online.de", "gmail.com"],
    "cs": ["seznam.cz", "email.cz", "gmail.com", "centrum.cz"],
}
REGION = {"en": "GB", "fr": "FR", "de": "DE", "cs": "CZ"}

TITLES = {  # (male, female) per grammatical use
    "en": {"title": ("Mr", "Ms")},
    "fr": {"title": ("M.", "Mme"), "title_long": ("Monsieur", "Madame")},
    "de": {"title": ("Herr", "Frau"), "title_dat": ("Herrn", "Frau")},
    "cs": {"title": ("pan", "paní"), "title_voc": ("pane", "paní"), "title_dat": ("panu", "paní")},
}

# Treatments whose mention reveals health data (strict mode), in the forms sentences use.
# Brackets mark the sensitive words (what is labelled): "[physiotherapy] session".
SERVICES = {
    "en": {"service": ["[massage]", "[physiotherapy] session", "[botox treatment]",
                       "sports [massage]", "[physiotherapy]"],
           "service_pl": ["[massages]", "[botox treatments]", "[physiotherapy] sessions"]},
    "fr": {"service": ["[massage]", "séance de [kinésithérapie]", "[injection de botox]",
                       "[physiothérapie]"],
           "service_pl": ["[massages]", "séances de [kinésithérapie]"]},
    "de": {"service": ["[Massage]", "[Physiotherapie]", "[Botox-Behandlung]", "[Sportmassage]"],
           "service_pl": ["[Massagen]", "[Botox-Behandlungen]", "[Physiotherapien]"]},
    "cs": {"service": ["[masáž]", "[fyzioterapie]", "[aplikace botoxu]"],
           "service_acc": ["[masáž]", "[fyzioterapii]", "[aplikaci botoxu]"],
           "service_gen": ["[masáže]", "[fyzioterapie]", "[aplikace botoxu]"],
           "service_pl": ["[masáže]", "[fyzioterapie]"]},
}
SERVICE_TERMS: list[str] = [
    "massage", "physiotherapy", "botox treatment", "botox",
    "kinésithérapie", "physiothérapie", "injection de botox",
    "Massage", "Sportmassage", "Physiotherapie", "Botox-Behandlung",
    "masáž", "fyzioterapie", "aplikace botoxu",
]
"""What a clinic operator lists under `strict.services` (exported for the bench)."""

MONTHS = {
    "en": "January February March April May June July August September October November December",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
    "cs": "ledna února března dubna května června července srpna září října listopadu prosince",
}

# ----------------------------------------------------------------------------- values


def luhn_digit(partial: str) -> str:
    total = 0
    for index, char in enumerate(reversed(partial)):
        value = int(char)
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def luhn_ok(number: str) -> bool:
    return luhn_digit(number[:-1]) == number[-1]


CARD_BRANDS = [  # (prefix, length, grouping)
    ("4", 16, (4, 4, 4, 4)),
    ("4", 16, (4, 4, 4, 4)),
    ("51", 16, (4, 4, 4, 4)),
    ("55", 16, (4, 4, 4, 4)),
    ("2221", 16, (4, 4, 4, 4)),
    ("34", 15, (4, 6, 5)),
    ("37", 15, (4, 6, 5)),
    ("6011", 16, (4, 4, 4, 4)),
    ("3530", 16, (4, 4, 4, 4)),
    ("6759", 19, (4, 4, 4, 4, 3)),
    ("36", 14, (4, 6, 4)),
]


def group(digits: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, pos = [], 0
    for size in sizes:
        parts.append(digits[pos : pos + size])
        pos += size
    return sep.join(p for p in parts if p)


def card(rng: random.Random) -> str:
    prefix, length, sizes = rng.choice(CARD_BRANDS)
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = body + luhn_digit(body)
    style = rng.random()
    if style < 0.6:
        return group(number, sizes, " ")
    if style < 0.75:
        return group(number, sizes, "-")
    return number


def cardlike_reference(rng: random.Random) -> str:
    """16 digits starting like a Visa, grouped like a card, failing Luhn."""
    while True:
        number = "4" + "".join(rng.choice(string.digits) for _ in range(15))
        if not luhn_ok(number):
            return group(number, (4, 4, 4, 4), rng.choice([" ", "-", ""]))


IBAN_LAYOUTS = {  # BBAN as (kind, count) runs: n digits, a upper letters, c alphanumerics
    "DE": [("n", 18)],
    "GB": [("a", 4), ("n", 14)],
    "FR": [("n", 10), ("c", 11), ("n", 2)],
    "CZ": [("n", 20)],
    "AT": [("n", 16)],
    "NL": [("a", 4), ("n", 10)],
    "CH": [("n", 5), ("c", 12)],
    "BE": [("n", 12)],
    "SK": [("n", 20)],
}
IBAN_COUNTRIES = {"en": ["GB", "GB", "DE", "NL"], "fr": ["FR", "FR", "BE", "CH"],
                  "de": ["DE", "DE", "AT", "CH"], "cs": ["CZ", "CZ", "SK", "DE"]}


def iban(rng: random.Random, lang: str) -> str:
    country = rng.choice(IBAN_COUNTRIES[lang])
    alphabets = {"n": string.digits, "a": string.ascii_uppercase,
                 "c": string.digits + string.ascii_uppercase}
    while True:
        bban = "".join(
            rng.choice(alphabets[kind]) for kind, count in IBAN_LAYOUTS[country] for _ in range(count)
        )
        number = country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban
        if stdnum_iban.is_valid(number):  # country rules (e.g. bank account checksums)
            break
    if rng.random() < 0.7:
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


MOBILE_PATTERNS = {
    "GB": ["07{d9}"], "IE": ["08{d8}"], "US": ["{us}"], "FR": ["06{d8}", "07{d8}"],
    "BE": ["04{d8}"], "CH": ["07{d8}"], "DE": ["015{d8}", "016{d8}", "017{d8}"],
    "AT": ["0664{d7}", "0676{d7}"], "CZ": ["6{d8}", "7{d8}"],
}
LANDLINES = {"en": ["020 7946 0{d3}", "0161 496 0{d3}"], "fr": ["01 42 {d2} {d2} {d2}"],
             "de": ["030 {d8}", "089 {d7}"], "cs": ["2{d8}"]}


def _digits_template(rng: random.Random, template: str) -> str:
    out = template
    for n in range(9, 0, -1):
        while "{d%d}" % n in out:
            out = out.replace("{d%d}" % n, "".join(rng.choice(string.digits) for _ in range(n)), 1)
    if "{us}" in out:
        out = out.replace("{us}", rng.choice(["212", "415", "617"]) + rng.choice("23456789")
                          + "".join(rng.choice(string.digits) for _ in range(6)))
    return out


def _valid_number(rng: random.Random, region: str, templates: list[str]) -> phonenumbers.PhoneNumber:
    while True:
        raw = _digits_template(rng, rng.choice(templates))
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return number


def guest_phone(rng: random.Random, person: Person, lang: str) -> str:
    number = _valid_number(rng, person.country, MOBILE_PATTERNS[person.country])
    home = person.country == REGION[lang]
    style = rng.random()
    if home and style < 0.4:
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        return national.replace(" ", "") if rng.random() < 0.2 else national
    if style < 0.7:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    if style < 0.9:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return "00" + international[1:]


def hotel_phone(rng: random.Random, lang: str) -> str:
    """A landline as hotels print it, including the local habits: '+44 (0)20 ...',
    '030/1234567', '01.42.68.53.00'."""
    number = _valid_number(rng, REGION[lang], LANDLINES[lang])
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    code, _, rest = international.partition(" ")
    habits = {
        "en": [f"{code} (0){rest}"],
        "fr": [national.replace(" ", "."), f"{code} (0){rest}"],
        "de": [national.replace(" ", "/", 1), f"{code} (0){rest}"],
        "cs": [f"{code} {rest}", international.replace(" ", "")],
    }[lang]
    return rng.choice([international, national, national, *habits])


def siret(rng: random.Random) -> str:
    """A French establishment number: 14 digits, Luhn-valid by construction."""
    while True:
        number = str(rng.randint(1, 9)) + "".join(rng.choice(string.digits) for _ in range(13))
        if luhn_ok(number) and luhn_ok(number[:9]):
            return f"{number[:3]} {number[3:6]} {number[6:9]} {number[9:]}"


def company_footer(rng: random.Random, lang: str) -> str:
    """Registration numbers printed under hotel e-mails: numbers, none of them personal."""
    digits = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    return {
        "en": f"Registered in England and Wales No. {digits(8)}. VAT GB {digits(3)} {digits(4)} {digits(2)}.",
        "fr": f"SIRET {siret(rng)} - TVA intracommunautaire FR{digits(2)}{digits(9)} - RCS Paris",
        "de": f"Amtsgericht München HRB {digits(6)} | USt-IdNr. DE{digits(9)} | Steuernr. {digits(3)}/{digits(3)}/{digits(5)}",
        "cs": f"IČO {digits(8)}, DIČ CZ{digits(8)}, zapsáno v OR u MS v Praze, oddíl C, vložka {digits(6)}",
    }[lang]


def ascii_fold(text: str) -> str:
    """Diacritics removed one character for one character (offsets are unchanged)."""
    return "".join(unicodedata.normalize("NFD", c)[0] for c in text)


def guest_email(rng: random.Random, person: Person, lang: str) -> str:
    first = ascii_fold(person.first).lower().replace("'", "").replace("-", "")
    last = ascii_fold(person.last).lower().replace("'", "").replace("ß", "ss")
    local = rng.choice([f"{first}.{last}", f"{first[0]}.{last}", f"{first}{last}{rng.randint(1, 99)}",
                        f"{last}.{first}", f"{first}_{last}"])
    return f"{local}@{rng.choice(MAIL_PROVIDERS[lang])}"


def passport(rng: random.Random, country: str) -> str:
    digits = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    if country in {"FR", "BE"}:
        return digits(2) + "".join(rng.choice(string.ascii_uppercase) for _ in range(2)) + digits(5)
    if country in {"DE", "AT", "CH"}:
        alphabet = "CFGHJKLMNPRTVWXYZ0123456789"
        return "C" + "".join(rng.choice(alphabet) for _ in range(8))
    if country in {"CZ", "SK"}:
        return digits(8)
    return digits(9)


def date_text(rng: random.Random, lang: str, year: int, style: str | None = None) -> str:
    day, month = rng.randint(1, 28), rng.randint(1, 12)
    name = MONTHS[lang].split()[month - 1]
    styles = {
        "en": [f"{day:02d}/{month:02d}/{year}", f"{day} {name} {year}", f"{name} {day}, {year}",
               f"{year}-{month:02d}-{day:02d}"],
        "fr": [f"{day:02d}/{month:02d}/{year}", f"{day} {name} {year}"],
        "de": [f"{day:02d}.{month:02d}.{year}", f"{day}. {name} {year}"],
        "cs": [f"{day}. {month}. {year}", f"{day:02d}.{month:02d}.{year}", f"{day}. {name} {year}"],
    }[lang]
    return rng.choice(styles)


def short_date(rng: random.Random, lang: str) -> str:
    day, month = rng.randint(1, 28), rng.randint(1, 12)
    return {"en": f"{day:02d}/{month:02d}", "fr": f"{day:02d}/{month:02d}",
            "de": f"{day:02d}.{month:02d}.", "cs": f"{day}. {month}."}[lang]


def price(rng: random.Random, lang: str) -> str:
    amount = rng.randint(45, 2400)
    cents = rng.choice(["00", "50", "90"])
    return {
        "en": f"£{amount:,}.{cents}",
        "fr": f"{amount:,}".replace(",", " ") + f",{cents} €",
        "de": f"{amount:,},{cents} €".replace(",", ".", 1) if amount >= 1000 else f"{amount},{cents} €",
        "cs": f"{amount * 25:,} Kč".replace(",", " "),
    }[lang]


def booking_reference(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(2)) + "-" + str(rng.randint(10000, 99999))
    if kind < 0.7:
        return str(rng.randint(100000, 999999999))  # many of these dial somewhere
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(8))


def order_number(rng: random.Random, lang: str) -> str:
    """Phone-like reference numbers: leading 0, grouped like a national number."""
    digits = "0" + "".join(rng.choice(string.digits) for _ in range(rng.choice([9, 10])))
    style = rng.random()
    if style < 0.4:
        return f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    if style < 0.6:
        return f"{rng.randint(2023, 2026)}-{digits[1:4]}-{digits[4:8]}"
    return digits


def masked_card(rng: random.Random) -> str:
    last = "".join(rng.choice(string.digits) for _ in range(4))
    return rng.choice([f"**** **** **** {last}", f"XXXX-XXXX-XXXX-{last}", f"•••• {last}", f"*{last}"])


# ----------------------------------------------------------------------------- templates

Template = dict[str, str]

TEMPLATES: dict[str, list[Template]] = {
    "en": [
        {"channel": "email", "domain": "hotel", "kind": "refund",
         "text": "Subject: Refund for booking {ref}\n\nDear {title} {last},\n\nas agreed we have refunded {price} to your account {iban} (account holder: {name}). The transfer reference is {invoice}; it may take 2-3 working days.\nFor questions write to {hotel_email}.\n\n{hotel}"},
        {"channel": "sms", "domain": "hotel", "kind": "registration",
         "text": "{hotel}: {first}, to finish check-in please confirm passport no. {passport} and date of birth {dob}. Room {room} ready at 3pm."},
        {"channel": "email", "domain": "clinic", "kind": "registration",
         "text": "Subject: New patient registration\n\nNew patient: {name}\nDOB: {dob}\nPassport: {passport}\nMobile: {phone}\nE-mail: {email}\nPayer IBAN: {iban}\nFirst appointment: {service}, {date} {time} with {staff}\n\n{clinic}"},
        {"channel": "sms", "domain": "hotel", "kind": "confirmation",
         "text": "{hotel}: Hi {first}, your stay {date} to {date2} is confirmed. Ref {ref}. Room {room}. Questions? Call {hotel_phone}"},
        {"channel": "sms", "domain": "hotel", "kind": "reminder",
         "text": "Reminder from {hotel}: {title} {last}, check-in from 3pm tomorrow. Door code {door}. Reply STOP to opt out."},
        {"channel": "sms", "domain": "clinic", "kind": "reminder",
         "text": "{clinic}: Dear {first}, reminder of your {service} with {staff} on {date} at {time}. To rebook call {hotel_phone}."},
        {"channel": "sms", "domain": "hotel", "kind": "cancellation",
         "text": "Your booking {ref} at {hotel} has been cancelled, {first}. A refund of {price} goes to card {masked_card}."},
        {"channel": "sms", "domain": "hotel", "kind": "payment",
         "text": "Payment failed for {name}'s reservation {cardlike_ref}. Card used: {card}. Please call {hotel_phone}."},
        {"channel": "email", "domain": "hotel", "kind": "confirmation",
         "text": "Subject: Booking confirmation {ref} - {hotel}\n\nDear {title} {last},\n\nThank you for booking with {hotel}. We are pleased to confirm your reservation from {date} to {date2} (2 nights), room {room}, total {price}.\n\nGuest: {name}\nE-mail: {email}\nMobile: {phone}\nCard on file: {card}\n\nWe look forward to welcoming you.\n{hotel}, {hotel_phone}, {hotel_email}"},
        {"channel": "email", "domain": "hotel", "kind": "precheckin",
         "text": "Subject: Online check-in for your stay, {first}\n\nHello {first},\n\nwe have received your online check-in.\nPassport number: {passport}\nDate of birth: {dob}\nArrival: {date}, estimated {time}\n\nIf anything is wrong, reply to {hotel_email} or call us on {hotel_phone}. Order no. {order} refers to your airport transfer."},
        {"channel": "email", "domain": "hotel", "kind": "invoice",
         "text": "Subject: Invoice {invoice} for {name}\n\nDear {title} {last},\n\nplease find your invoice {invoice} for {price}. We received a bank transfer from account {iban} on {date}.\nGuests: {name}, {companion}\nBooking reference: {cardlike_ref}\n\nKind regards,\nAccounts team, {hotel}"},
        {"channel": "email", "domain": "clinic", "kind": "confirmation",
         "text": "Subject: Your appointment on {date}\n\nDear {title} {last},\n\nyour {service} with {staff} is confirmed for {date} at {time} in treatment room {room}. Please arrive 10 minutes early and bring your ID.\n\nPatient: {name}, born {dob}\nPhone on record: {phone}\n\n{clinic}"},
        {"channel": "email", "domain": "clinic", "kind": "cancellation",
         "text": "Subject: Cancelled: {service} on {date}\n\nHi {first},\n\nsorry, {staff} is unwell and we had to cancel your {service}. Your deposit of {price} will be refunded to {masked_card} within 5 days. We hope to see you soon.\n\n{clinic} | {hotel_phone}"},
        {"channel": "email", "domain": "clinic", "kind": "invoice",
         "text": "Subject: Receipt {invoice}\n\nReceipt for {name} ({email})\n3 x {service_pl}, total {price}\nPaid by card {card} on {date}.\nFor insurance claims: DOB {dob}, policy ref {ref}.\n\n{clinic}"},
        {"channel": "sms", "domain": "clinic", "kind": "confirmation",
         "text": "Hi {first}, your {service} on {date} {time} is booked. {clinic}. Cancel: reply C or call {hotel_phone}. Ref {ref}"},
        {"channel": "email", "domain": "hotel", "kind": "reminder",
         "text": "Subject: See you on {date}, {first}!\n\nHello {first},\n\nyour room {room} at {hotel} will be ready from 3pm. Parking code {door}. Our restaurant is open 7-22h.\nWe have your mobile as {phone} and will text you when the room is ready. Please have your passport ready at check-in.\n\n{hotel}"},
    ],
    "fr": [
        {"channel": "email", "domain": "hotel", "kind": "refund",
         "text": "Subject: Remboursement réservation {ref}\n\nBonjour {title} {last},\n\nnous avons remboursé {price} sur votre compte {iban} (titulaire : {name}). Référence du virement : {invoice}.\nContact : {hotel_email}\n\n{hotel}"},
        {"channel": "sms", "domain": "hotel", "kind": "registration",
         "text": "{hotel} : {first}, merci de confirmer votre passeport n° {passport} et votre date de naissance ({dob}) avant l'arrivée."},
        {"channel": "email", "domain": "clinic", "kind": "registration",
         "text": "Subject: Dossier patient\n\nNom : {first} {last_upper}\nDate de naissance : {dob}\nPièce d'identité : passeport {passport}\nPortable : {phone}\nE-mail : {email}\nIBAN pour remboursement : {iban}\nPremier rendez-vous : {service} le {date} à {time}\n\n{clinic}"},
        {"channel": "sms", "domain": "hotel", "kind": "confirmation",
         "text": "{hotel} : Bonjour {first}, votre séjour du {date} au {date2} est confirmé. Réf. {ref}, chambre {room}. Infos : {hotel_phone}"},
        {"channel": "sms", "domain": "hotel", "kind": "reminder",
         "text": "Rappel {hotel} : {title} {last_upper}, arrivée demain à partir de 15h. Code porte {door}. N'hésitez pas à nous appeler au {hotel_phone}."},
        {"channel": "sms", "domain": "clinic", "kind": "reminder",
         "text": "{clinic} : {title} {last}, rappel de votre {service} avec {staff} le {date} à {time}. Pour annuler : {hotel_phone}"},
        {"channel": "sms", "domain": "hotel", "kind": "cancellation",
         "text": "Votre réservation {ref} à l'{hotel} est annulée, {first}. Remboursement de {price} sur la carte {masked_card}."},
        {"channel": "email", "domain": "hotel", "kind": "confirmation",
         "text": "Subject: Confirmation de réservation {ref}\n\nBonjour {title_long} {last},\n\nNous avons le plaisir de confirmer votre réservation du {date} au {date2}, chambre {room}, montant total {price}.\n\nNom du client : {first} {last_upper}\nE-mail : {email}\nTéléphone : {phone}\nCarte de garantie : {card}\n\nCordialement,\n{hotel} - {hotel_phone} - {hotel_email}"},
        {"channel": "email", "domain": "hotel", "kind": "precheckin",
         "text": "Subject: Enregistrement en ligne\n\nBonjour {first},\n\nmerci pour votre enregistrement en ligne.\nN° de passeport : {passport}\nNé(e) le {dob}\nArrivée prévue : {date} vers {time}\nCommande n° {order} (transfert aéroport).\n\nÀ bientôt,\n{hotel}"},
        {"channel": "email", "domain": "hotel", "kind": "invoice",
         "text": "Subject: Facture {invoice}\n\n{title_long} {last},\n\nveuillez trouver ci-joint la facture {invoice} d'un montant de {price}. Virement reçu le {date} depuis le compte {iban}.\nClients : {name} et {companion}\nRéférence : {cardlike_ref}\n\n{hotel}"},
        {"channel": "email", "domain": "clinic", "kind": "confirmation",
         "text": "Subject: Votre rendez-vous du {date}\n\nChère {first}, cher patient,\n\nvotre {service} avec {staff} est confirmée le {date} à {time}, salle {room}. Merci d'apporter votre carte d'identité.\n\nPatient(e) : {name}, née le {dob}\nTél. : {phone}\n\n{clinic}"},
        {"channel": "email", "domain": "clinic", "kind": "cancellation",
         "text": "Subject: Annulation de votre rendez-vous\n\nBonjour {title} {last},\n\nnous sommes au regret d'annuler votre {service} du {date}. L'acompte de {price} sera remboursé sur la carte {masked_card}. Pour reprogrammer, écrivez à {hotel_email}.\n\n{clinic}"},
        {"channel": "email", "domain": "clinic", "kind": "invoice",
         "text": "Subject: Reçu {invoice}\n\nReçu pour {name} - {email}\n{service_pl} (3 séances) : {price}\nPayé par carte {card} le {date}.\nDate de naissance : {dob} (mutuelle, réf. {ref})\n\n{clinic}"},
        {"channel": "sms", "domain": "clinic", "kind": "confirmation",
         "text": "Bonjour {first}, RDV {service} confirmé le {date} à {time}. {clinic}. Pour toute question : {hotel_phone}"},
        {"channel": "sms", "domain": "hotel", "kind": "payment",
         "text": "{hotel} : le paiement de {title} {last} a échoué (carte {card}). Merci de nous contacter au {hotel_phone}. Réf. {cardlike_ref}"},
    ],
    "de": [
        {"channel": "email", "domain": "hotel", "kind": "refund",
         "text": "Subject: Erstattung Buchung {ref}\n\nGuten Tag {title} {last},\n\nwir haben {price} auf Ihr Konto {iban} (Kontoinhaber: {name}) erstattet. Verwendungszweck: {invoice}.\nRückfragen an {hotel_email}\n\n{hotel}"},
        {"channel": "sms", "domain": "hotel", "kind": "registration",
         "text": "{hotel}: Hallo {first}, bitte bestätigen Sie Passnummer {passport} und Geburtsdatum {dob} für den Meldeschein."},
        {"channel": "email", "domain": "clinic", "kind": "registration",
         "text": "Subject: Neuaufnahme\n\nName: {name}\nGeburtsdatum: {dob}\nAusweisnummer: {passport}\nMobil: {phone}\nE-Mail: {email}\nIBAN (Lastschrift): {iban}\nErsttermin: {service} am {date} um {time}\n\n{clinic}"},
        {"channel": "sms", "domain": "hotel", "kind": "confirmation",
         "text": "{hotel}: Hallo {first}, Ihr Aufenthalt vom {date} bis {date2} ist bestätigt. Buchung {ref}, Zimmer {room}. Fragen: {hotel_phone}"},
        {"channel": "sms", "domain": "hotel", "kind": "reminder",
         "text": "Erinnerung: Guten Tag {title} {last}, Check-in morgen ab 15 Uhr im {hotel}. Türcode {door}."},
        {"channel": "sms", "domain": "clinic", "kind": "reminder",
         "text": "{clinic}: Liebe/r {first}, Erinnerung an Ihre {service} bei {staff} am {date} um {time}. Absagen unter {hotel_phone}."},
        {"channel": "sms", "domain": "hotel", "kind": "cancellation",
         "text": "Ihre Buchung {ref} im {hotel} wurde storniert. Die Erstattung von {price} erfolgt auf Karte {masked_card}. Ihr {hotel}-Team"},
        {"channel": "email", "domain": "hotel", "kind": "confirmation",
         "text": "Subject: Buchungsbestätigung {ref}\n\nSehr geehrte/r {title} {last},\n\nvielen Dank für Ihre Buchung im {hotel}. Wir bestätigen Ihren Aufenthalt vom {date} bis {date2}, Zimmer {room}, Gesamtpreis {price}.\n\nGast: {name}\nE-Mail: {email}\nTelefon: {phone}\nKreditkarte: {card}\n\nMit freundlichen Grüßen\n{hotel} | Tel. {hotel_phone} | {hotel_email}"},
        {"channel": "email", "domain": "hotel", "kind": "precheckin",
         "text": "Subject: Online-Check-in\n\nGuten Tag {title_dat} {last},\n\nwir haben Ihren Online-Check-in erhalten.\nReisepassnummer: {passport}\nGeburtsdatum: {dob}\nAnreise: {date}, ca. {time}\nBestellung {order} (Flughafentransfer)\n\nIhr {hotel}"},
        {"channel": "email", "domain": "hotel", "kind": "invoice",
         "text": "Subject: Rechnung {invoice}\n\nSehr geehrte/r {title} {last},\n\nanbei Ihre Rechnung {invoice} über {price}. Ihre Überweisung von Konto {iban} ist am {date} eingegangen.\nGäste: {name}, {companion}\nBuchungsnummer: {cardlike_ref}\nFamilie {last_gen} Zimmer: {room}\n\n{hotel}"},
        {"channel": "email", "domain": "clinic", "kind": "confirmation",
         "text": "Subject: Terminbestätigung {date}\n\nGuten Tag {title} {last},\n\nIhre {service} bei {staff} ist am {date} um {time} in Raum {room} bestätigt. Bitte bringen Sie Ihren Ausweis mit.\n\nPatient: {name}, geb. {dob}\nTelefon: {phone}\n\n{clinic}"},
        {"channel": "email", "domain": "clinic", "kind": "cancellation",
         "text": "Subject: Absage Ihres Termins\n\nHallo {first},\n\nleider müssen wir Ihre {service} am {date} absagen, da {staff} erkrankt ist. Die Anzahlung von {price} erstatten wir auf {masked_card}. Neue Termine über {hotel_email}.\n\n{clinic}"},
        {"channel": "email", "domain": "clinic", "kind": "invoice",
         "text": "Subject: Quittung {invoice}\n\nQuittung für {name} ({email})\n3 x {service_pl}: {price}\nBezahlt mit Karte {card} am {date}.\nGeburtsdatum: {dob}, Versicherungsnr. {ref}\n\n{clinic}"},
        {"channel": "sms", "domain": "clinic", "kind": "confirmation",
         "text": "Hallo {first}, Ihre {service} am {date} um {time} ist gebucht. {clinic}, Tel. {hotel_phone}"},
        {"channel": "sms", "domain": "hotel", "kind": "payment",
         "text": "{hotel}: Zahlung für {title_dat} {last} fehlgeschlagen, Karte {card}. Bitte rufen Sie {hotel_phone} an. Buchung {cardlike_ref}"},
    ],
    "cs": [
        {"channel": "email", "domain": "hotel", "kind": "refund",
         "text": "Subject: Vrácení platby {ref}\n\nDobrý den, {title_voc} {last_voc},\n\nčástku {price} jsme vrátili na Váš účet {iban} (majitel účtu: {name}). Variabilní symbol: {invoice}.\nDotazy: {hotel_email}\n\n{hotel}"},
        {"channel": "sms", "domain": "hotel", "kind": "registration",
         "text": "{hotel}: Dobrý den, prosíme o potvrzení čísla pasu {passport} a data narození {dob} pro {title_acc_or_nom} {name_acc}."},
        {"channel": "email", "domain": "clinic", "kind": "registration",
         "text": "Subject: Registrace pacienta\n\nJméno: {name}\nDatum narození: {dob}\nČíslo OP: {passport}\nMobil: {phone}\nE-mail: {email}\nIBAN pro vratky: {iban}\nPrvní termín: {service}, {date} v {time}\n\n{clinic}"},
        {"channel": "sms", "domain": "hotel", "kind": "confirmation",
         "text": "{hotel}: Dobrý den, {title_voc} {last_voc}, Váš pobyt {date} - {date2} je potvrzen. Rezervace {ref}, pokoj {room}. Info: {hotel_phone}"},
        {"channel": "sms", "domain": "hotel", "kind": "reminder",
         "text": "Ahoj {first_voc}, připomínáme zítřejší příjezd do {hotel}. Kód dveří {door}. Tešíme se na Vás!"},
        {"channel": "sms", "domain": "clinic", "kind": "reminder",
         "text": "{clinic}: Vážený/á {title_voc} {last_voc}, připomínáme Vaši {service_acc} u {staff} dne {date} v {time}. Zrušení: {hotel_phone}"},
        {"channel": "sms", "domain": "hotel", "kind": "cancellation",
         "text": "Rezervace {ref} v {hotel} byla zrušena. Částka {price} bude vrácena na kartu {masked_card}. Děkujeme, {first_voc}."},
        {"channel": "email", "domain": "hotel", "kind": "confirmation",
         "text": "Subject: Potvrzení rezervace {ref}\n\nDobrý den, {title_voc} {last_voc},\n\nděkujeme za rezervaci v {hotel}. Potvrzujeme pobyt od {date} do {date2}, pokoj č. {room}, celková cena {price}.\n\nJméno hosta: {name}\nE-mail: {email}\nTelefon: {phone}\nPlatební karta: {card}\n\nS pozdravem\n{hotel}, tel. {hotel_phone}, {hotel_email}"},
        {"channel": "email", "domain": "hotel", "kind": "precheckin",
         "text": "Subject: Online check-in\n\nDobrý den,\n\nobdrželi jsme online check-in pro {title_acc_or_nom} {name_acc}.\nČíslo pasu: {passport}\nDatum narození: {dob}\nPříjezd: {date} kolem {time}\nObjednávka č. {order} (transfer z letiště)\n\n{hotel}"},
        {"channel": "email", "domain": "hotel", "kind": "invoice",
         "text": "Subject: Faktura {invoice}\n\nVážený/á {title_voc} {last_voc},\n\nv příloze zasíláme fakturu {invoice} na částku {price}. Platbu z účtu {iban} jsme přijali dne {date}.\nHosté: {name}, {companion}\nČíslo rezervace: {cardlike_ref}\n\n{hotel}"},
        {"channel": "email", "domain": "clinic", "kind": "confirmation",
         "text": "Subject: Potvrzení termínu {date}\n\nDobrý den, {title_voc} {last_voc},\n\npotvrzujeme termín Vaší {service_gen} u {staff} dne {date} v {time}, místnost {room}. Vezměte si s sebou občanský průkaz.\n\nPacient: {name}, nar. {dob}\nTelefon: {phone}\n\n{clinic}"},
        {"channel": "email", "domain": "clinic", "kind": "cancellation",
         "text": "Subject: Zrušení termínu\n\nMilá/Milý {first_voc},\n\nbohužel musíme zrušit Vaši {service_acc} dne {date}. Zálohu {price} vrátíme na kartu {masked_card}. Nový termín domluvíte na {hotel_email}.\n\n{clinic}"},
        {"channel": "email", "domain": "clinic", "kind": "invoice",
         "text": "Subject: Doklad {invoice}\n\nDoklad pro {title_dat} {last_dat} ({email})\n3x {service_pl}: {price}\nZaplaceno kartou {card} dne {date}.\nDatum narození: {dob}, pojišťovna ref. {ref}\n\n{clinic}"},
        {"channel": "sms", "domain": "clinic", "kind": "confirmation",
         "text": "Dobrý den, {title_voc} {last_voc}, Vaše {service} {date} v {time} je objednána. {clinic}, tel. {hotel_phone}"},
        {"channel": "sms", "domain": "hotel", "kind": "payment",
         "text": "{hotel}: platba {title_gen_or_dat} {last_gen} kartou {card} se nezdařila. Volejte {hotel_phone}. Rezervace {cardlike_ref}"},
    ],
}

LABELLED = {  # slot -> span type
    "name": "name", "first": "name", "last": "name", "last_upper": "name", "first_voc": "name",
    "last_voc": "name", "first_dat": "name", "last_dat": "name", "last_acc": "name",
    "last_gen": "name", "name_acc": "name", "companion": "name",
    "card": "card", "iban": "iban", "hotel_iban": "iban", "email": "email", "hotel_email": "email",
    "phone": "phone", "hotel_phone": "phone", "passport": "passport", "dob": "date_of_birth",
    "service": "service", "service_pl": "service", "service_acc": "service",
    "service_gen": "service",
}


@dataclass
class Message:
    """A rendered message and its labelled spans."""

    text: str = ""
    spans: list[dict[str, Any]] = field(default_factory=list)

    def add(self, value: str, kind: str | None) -> None:
        if "[" in value and kind is not None:
            before, _, rest = value.partition("[")
            core, _, after = rest.partition("]")
            self.add(before, None)
            self.add(core, kind)
            self.add(after, None)
            return
        if kind is not None:
            self.spans.append({"start": len(self.text), "end": len(self.text) + len(value), "type": kind})
        self.text += value


class Filler:
    """Values for one message: one guest, one hotel, consistent across slots."""

    def __init__(self, rng: random.Random, lang: str) -> None:
        self.rng = rng
        self.lang = lang
        self.person = rng.choice(PEOPLE[lang])
        self.companion = rng.choice([p for p in PEOPLE[lang] if p is not self.person])
        self.cache: dict[str, str] = {}

    def _title(self, key: str) -> str:
        table = TITLES[self.lang]
        pair = table.get(key) or table["title"]
        return pair[1] if self.person.female else pair[0]

    def value(self, slot: str) -> str:
        if slot in self.cache:
            return self.cache[slot]
        value = self._make(slot)
        self.cache[slot] = value
        return value

    def _make(self, slot: str) -> str:
        rng, lang, person = self.rng, self.lang, self.person
        match slot:
            case "name":
                return f"{person.first} {person.last}"
            case "first" | "last" | "first_voc" | "last_voc" | "first_dat" | "last_dat" | "last_acc" | "last_gen":
                return person.form(slot)
            case "last_upper":
                return person.last.upper()
            case "name_acc":
                return f"{CZECH_FIRST_ACCUSATIVE.get(person.first, person.first)} {person.form('last_acc')}"
            case "companion":
                return f"{self.companion.first} {self.companion.last}"
            case "title" | "title_long" | "title_dat" | "title_voc":
                return self._title(slot)
            case "title_acc_or_nom":
                return "paní" if person.female else "pana"
            case "title_gen_or_dat":
                return "paní" if person.female else "pana"
            case "card":
                return card(rng)
            case "iban":
                return iban(rng, lang)
            case "email":
                return guest_email(rng, person, lang)
            case "hotel_email":
                return rng.choice(["reception", "info", "reservations", "booking"]) + "@" + DOMAINS[lang]
            case "phone":
                return guest_phone(rng, person, lang)
            case "hotel_phone":
                return hotel_phone(rng, lang)
            case "passport":
                return passport(rng, person.country)
            case "dob":
                return date_text(rng, lang, rng.randint(1938, 2006))
            case "service" | "service_pl" | "service_acc" | "service_gen":
                forms = SERVICES[lang]
                return rng.choice(forms.get(slot) or forms["service"])
            case "hotel":
                return rng.choice(HOTELS[lang])
            case "clinic":
                return rng.choice(CLINICS[lang])
            case "staff":
                return rng.choice(STAFF[lang])
            case "ref":
                return booking_reference(rng)
            case "cardlike_ref":
                return cardlike_reference(rng)
            case "room":
                return str(rng.choice([rng.randint(1, 40), rng.randint(100, 520)]))
            case "date":
                return date_text(rng, lang, rng.randint(2025, 2027))
            case "date2":
                return short_date(rng, lang)
            case "time":
                hour, minute = rng.randint(7, 19), rng.choice(["00", "15", "30", "45"])
                return f"{hour}:{minute}" if lang != "en" else f"{hour}:{minute}"
            case "price":
                return price(rng, lang)
            case "door":
                return str(rng.randint(1000, 999999)) + rng.choice(["", "#"])
            case "order" | "invoice":
                return order_number(rng, lang) if slot == "order" else rng.choice(
                    [f"{rng.randint(2024, 2026)}/{rng.randint(1, 9999):04d}", f"INV-{rng.randint(10000, 99999)}",
                     str(rng.randint(2024000000, 2026999999))]
                )
            case "masked_card":
                return masked_card(rng)
            case "company":
                return company_footer(rng, lang)
            case "hotel_iban":
                return iban(rng, lang)
        raise KeyError(f"unknown slot {slot!r}")


def render(template: Template, filler: Filler) -> Message:
    message = Message()
    for literal, slot, _spec, _conv in string.Formatter().parse(template["text"]):
        message.add(literal, None)
        if slot is not None:
            message.add(filler.value(slot), LABELLED.get(slot))
    return message


FOOTERS = {
    "en": "\n--\n{company}\nBank: {hotel_iban}\nTel {hotel_phone} | {hotel_email}",
    "fr": "\n--\n{company}\nCoordonnées bancaires : {hotel_iban}\nTél. {hotel_phone}",
    "de": "\n--\n{company}\nBankverbindung: IBAN {hotel_iban}\nTel. {hotel_phone} | {hotel_email}",
    "cs": "\n--\n{company}\nBankovní spojení: {hotel_iban}\nTel. {hotel_phone}",
}


def build(seed: int = SEED, per_language: int = PER_LANGUAGE) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    records = []
    for lang, templates in TEMPLATES.items():
        for index in range(per_language):
            template = templates[index % len(templates)] if index < len(templates) else rng.choice(templates)
            filler = Filler(rng, lang)
            if template["channel"] == "email" and rng.random() < 0.4:
                template = {**template, "text": template["text"] + FOOTERS[lang]}
            message = render(template, filler)
            text = message.text
            if template["channel"] == "sms" and lang != "en" and rng.random() < 0.3:
                text = ascii_fold(text)  # GSM 7-bit SMS lose their accents
            person = filler.person
            records.append({
                "id": f"{lang}-{template['channel']}-{index:04d}",
                "channel": template["channel"],
                "lang": lang,
                "domain": template["domain"],
                "kind": template["kind"],
                "source": "generated",
                "text": text,
                "recipient_name": f"{person.first} {person.last}",
                "spans": sorted(message.spans, key=lambda s: s["start"]),
            })
    return records


HANDWRITTEN = HERE / "handwritten.txt"
_MARK = re.compile(r"\{\{(\w+)\|(.*?)\}\}")


def handwritten(path: Path = HANDWRITTEN) -> list[dict[str, Any]]:
    """The held-out hand-written messages, markup turned into spans."""
    records: list[dict[str, Any]] = []
    header: list[str] | None = None
    lines: list[str] = []

    def flush() -> None:
        if header is None:
            return
        ident, channel, lang, domain, recipient = header
        message = Message()
        source = "\n".join(lines).strip("\n")
        position = 0
        for mark in _MARK.finditer(source):
            message.add(source[position : mark.start()], None)
            message.add(mark.group(2), mark.group(1))
            position = mark.end()
        message.add(source[position:], None)
        records.append({
            "id": ident, "channel": channel, "lang": lang, "domain": domain, "kind": "handwritten",
            "source": "handwritten", "text": message.text, "recipient_name": recipient,
            "spans": message.spans,
        })

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            flush()
            header = [part.strip() for part in line[4:].split("|")]
            lines = []
        elif header is not None:
            lines.append(line)
    flush()
    return records


def dump(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if corpus.jsonl is stale")
    args = parser.parse_args(argv)
    content = dump(build() + handwritten())
    if args.check:
        if not CORPUS.exists() or CORPUS.read_text(encoding="utf-8") != content:
            print("corpus.jsonl is out of date; run generate.py", file=sys.stderr)
            return 1
        return 0
    CORPUS.write_text(content, encoding="utf-8")
    print(f"wrote {content.count(chr(10))} messages to {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
