"""Detectors, operators and the notifications policy schema, one behaviour per test."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from gateway.redact.detectors import DetectorSet
from gateway.redact.detectors.card import is_card_number, luhn_valid
from gateway.redact.engine import Redactor
from gateway.redact.names import display_names, name_parts, names_in_text
from gateway.redact.operators import mask, pseudonym
from gateway.redact.policy import ActionSpec, ChannelRule, NotificationsPolicy, StrictPolicy

ALL = ["card", "iban", "email", "phone", "passport", "date_of_birth"]


def found(text: str, names: tuple[str, ...] = (), **policy: object) -> list[tuple[str, str]]:
    """(detector, matched text) for everything the policy's detectors find."""
    settings = {"detectors": ALL, **policy}
    detectors = DetectorSet(NotificationsPolicy.model_validate(settings))
    return [(c.detector, text[c.start : c.end]) for c in detectors.find(text, names)]


def kinds(text: str, **policy: object) -> list[str]:
    return [kind for kind, _ in found(text, **policy)]


# -- cards ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555 5555 5555 4444",
        "2223 0031 2200 3222",
        "3782 822463 10005",
        "6011 1111 1111 1117",
        "3530 1113 3330 0000",
        "4222222222222",
    ],
)
def test_card_numbers_in_common_layouts_are_found(number: str) -> None:
    assert found(f"Card: {number}, thank you") == [("card", number)]


def test_card_failing_luhn_is_a_booking_reference() -> None:
    assert kinds("Booking 4111 1111 1111 1112 confirmed") == []


def with_check_digit(body: str) -> str:
    return next(body + str(d) for d in range(10) if luhn_valid(body + str(d)))


def test_card_with_unknown_issuer_prefix_is_not_a_card() -> None:
    number = with_check_digit("911111111111111")
    assert not is_card_number(number)
    assert kinds(f"Voucher {number}") == []


def test_issuer_lengths_are_checked() -> None:
    assert is_card_number(with_check_digit("411111111111111"))  # Visa, 16
    assert not is_card_number(with_check_digit("41111111111111"))  # Visa has no 15-digit cards


def test_luhn_valid_siret_grouped_three_by_three_is_not_a_card() -> None:
    assert kinds("SIRET 552 100 554 00025 - RCS Paris") == []


def test_card_next_to_other_digits_is_still_found() -> None:
    assert found("Card 4111 1111 1111 1111 2 nights") == [("card", "4111 1111 1111 1111")]


def test_masking_follows_the_pci_display_rule() -> None:
    redactor = Redactor(NotificationsPolicy(detectors=["card"]))
    text, findings = redactor.redact_text("Card 4111 1111 1111 1111.")
    assert text == "Card **** **** **** 1111."
    assert [(f.detector, f.action) for f in findings] == [("card", "mask")]


# -- IBAN, e-mail, phone -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "CZ65 0800 0000 1920 0014 5399",
     "FR14 2004 1010 0505 0001 3M02 606"],
)
def test_valid_ibans_are_found(value: str) -> None:
    assert found(f"IBAN: {value}") == [("iban", value)]


def test_iban_with_wrong_check_digits_is_ignored() -> None:
    assert kinds("IBAN DE88 3704 0044 0532 0130 00") == []


def test_iban_stops_before_the_following_word() -> None:
    assert found("DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX") == [
        ("iban", "DE89 3704 0044 0532 0130 00")
    ]


def test_email_addresses_are_found() -> None:
    assert found("Write to jana.novakova+hotel@seznam.cz.") == [
        ("email", "jana.novakova+hotel@seznam.cz")
    ]


def test_international_and_national_phones_are_found() -> None:
    assert found("Call +44 20 7946 0958 or 020 7946 0123") == [
        ("phone", "+44 20 7946 0958"),
        ("phone", "020 7946 0123"),
    ]


def test_national_phone_depends_on_the_default_region() -> None:
    assert kinds("Volejte 777 123 456", default_region="CZ") == ["phone"]
    assert kinds("Hotel 777 123 456", default_region="CZ") == ["phone"]  # valid at home
    assert kinds("Hotel 777 123 456", default_region="GB") == []


def test_national_phones_of_guest_regions_after_a_phone_word() -> None:
    """Issue 11 item 3: national numbers from any listed region, after a phone word;
    international ones when merely possible (UK fictional mobiles)."""
    for text in ("Bitte Handy 0176 12345678", "appelez le 06 98 76 54 32",
                 "volejte 602 123 456", "Portable : 0612345678", "text us on +44 7700 900456"):
        assert kinds(text, default_region="GB") == ["phone"], text
    assert kinds("Bitte Handy 0176 12345678", default_region="GB", phone_regions=["GB"]) == []
    for text in ("Booking 48213377 confirmed", "Rechnung Nr. 2025-1187 vom 14.03.2025",
                 "Rezervace č. 602118734", "Order #100234557, total 1 284,60 EUR",
                 "Invoice INV 2025/00931 due 2025-05-31", "IČO 27082440"):
        assert kinds(text, default_region="GB") == [], text


def test_number_labelled_as_a_reference_is_not_a_phone() -> None:
    text = "Rezervace 724193856, tel. 724 193 857"
    assert found(text, default_region="CZ") == [("phone", "724 193 857")]


def test_dates_and_prices_are_not_phones() -> None:
    assert kinds("Termin am 06.09.2027 um 10:30, Preis 1.690,00 EUR", default_region="DE") == []


# -- passports and dates of birth ----------------------------------------------------


def test_passport_number_needs_a_context_word() -> None:
    assert found("Passport No. 533401872") == [("passport", "533401872")]
    assert kinds("Room 412, reference 533401872") == []


def test_passport_context_does_not_cross_a_sentence() -> None:
    assert kinds("Please bring your passport. Reference 533401872") == []


def test_passport_context_in_german_compounds_and_czech_cases() -> None:
    assert kinds("Reisepassnummer: C01X00T47") == ["passport"]
    assert kinds("číslo cestovního pasu 12345678") == ["passport"]


def test_date_of_birth_needs_a_context_word() -> None:
    text = "Arrival 12/03/2025. Date of birth: 04/07/1979"
    assert found(text) == [("date_of_birth", "04/07/1979")]


@pytest.mark.parametrize(
    "text, date",
    [
        ("née le 12 mars 1985", "12 mars 1985"),
        ("geb. 12.03.1985", "12.03.1985"),
        ("Datum narození: 12. 3. 1985", "12. 3. 1985"),
        ("data narozeni 24. listopadu 1970", "24. listopadu 1970"),  # SMS without accents
        ("born on March 12, 1985", "March 12, 1985"),
    ],
)
def test_dates_of_birth_in_four_languages(text: str, date: str) -> None:
    assert found(text) == [("date_of_birth", date)]


def test_a_birth_year_in_the_future_is_not_a_birth_date() -> None:
    assert kinds("born 12/03/2999") == []


# -- names and terms -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Děkujeme paní Novákové za platbu.", "Novákové"),
        ("Potvrzujeme rezervaci pro paní Novákovou.", "Novákovou"),
        ("Dobry den, pani Novakova", "Novakova"),
        ("Ahoj Jano, těšíme se!", "Jano"),
        ("M. NOVÁKOVÁ", "NOVÁKOVÁ"),
    ],
)
def test_czech_name_in_any_case_and_spelling(text: str, expected: str) -> None:
    assert found(text, ("Jana Nováková",), detectors=["name"]) == [("name", expected)]


def test_male_czech_surname_declensions() -> None:
    text = "Vážený pane Nováku, panu Novákovi, Petře, pana Černého"
    assert [v for _, v in found(text, ("Petr Novák", "Marek Černý"), detectors=["name"])] == [
        "Nováku", "Novákovi", "Petře", "Černého",
    ]


def test_german_genitive_and_english_possessive() -> None:
    assert found("Familie Müllers Zimmer", ("Thomas Müller",), detectors=["name"]) == [
        ("name", "Müllers")
    ]
    assert found("Mr Smith's booking", ("John Smith",), detectors=["name"]) == [("name", "Smith's")]


def test_full_name_is_one_span() -> None:
    assert found("Guest: Jana Nováková, room 12", ("Jana Nováková",), detectors=["name"]) == [
        ("name", "Jana Nováková")
    ]


def test_name_that_is_also_a_word_matches_only_capitalised() -> None:
    assert found("We hope you enjoyed it, Hope!", ("Hope Clark",), detectors=["name"]) == [
        ("name", "Hope")
    ]


def test_name_does_not_match_inside_other_words() -> None:
    assert found("Janitor Janáček", ("Jan Novák",), detectors=["name"]) == []


@pytest.mark.parametrize(
    "text, names",
    [
        ("Dear Ms Nováková,\nyour booking", ["Nováková"]),
        ("Sehr geehrter Herr Dr. Müller,", ["Müller"]),
        ("Bonjour Madame Dupont, votre chambre", ["Dupont"]),
        ("Dobrý den, paní Nováková,", ["Nováková"]),
        ("Guest: Jana Nováková\nRoom: 12", ["Jana Nováková"]),
        ("Guests: Jana Nováková, Petr Novák\n", ["Jana Nováková", "Petr Novák"]),
        ("Dear Guest, welcome", []),
        ("Dobrý den, Vaše rezervace je potvrzena", []),
        ("Sehr geehrte Damen und Herren,", []),
    ],
)
def test_names_announced_by_the_message_structure(text: str, names: list[str]) -> None:
    assert names_in_text(text) == names


def test_display_names_decode_rfc2047() -> None:
    header = "=?utf-8?q?Jana_Nov=C3=A1kov=C3=A1?= <jana@example.cz>, desk@hotel.example"
    assert display_names([header]) == ["Jana Nováková"]


def test_name_parts_leave_out_titles_and_particles() -> None:
    """Particles alone are not names; with their surname they are one phrase."""
    assert name_parts(["Ms Jana Nováková", "Ludwig van Beethoven"]) == (
        "Beethoven", "Jana", "Ludwig", "Nováková", "van Beethoven",
    )


def test_names_without_a_known_recipient() -> None:
    """Issue 11 item 5: salutations and titles in the supported languages, multi-word
    surnames, Czech/Slovak/Polish vocative and genitive forms."""
    redactor = Redactor(NotificationsPolicy(detectors=[], strict={"names": "redact"}))

    def names_found(text: str) -> list[str]:
        return [text[c.start : c.end] for c in redactor.scan(text)]

    cases = {
        "Good evening Mr. Dubois, your table is ready.": ["Dubois"],
        "Sehr geehrte Frau Van der Berg, vielen Dank.": ["Van der Berg"],
        "Vážený pane Dvořáku, děkujeme.": ["Dvořáku"],
        "Dear Mr and Mrs de la Cruz, late checkout is fine.": ["de la Cruz"],
        "Estimada Maria García, su reserva.": ["Maria García"],
        "Gentile Signor Rossi, la camera è pronta.": ["Rossi"],
        "Geachte heer Van den Broek, uw reservering.": ["Van den Broek"],
        "Szanowna Pani Wiśniewska, przypominamy.": ["Wiśniewska"],
        "Dobrý deň, pán Horváth, izba je pripravená.": ["Horváth"],
        "Potvrzujeme pobyt. Pro paní Novákovou jsme připravili pokoj.": ["Novákovou"],
        "Guest Pieter de Vries, arriving at 15:00.": ["Pieter de Vries"],
    }
    for text, names in cases.items():
        assert names_found(text) == names, text
    assert names_found("Dear guest, welcome to Hotel Belvedere.") == []


def test_known_name_in_inflected_forms() -> None:
    redactor = Redactor(NotificationsPolicy(detectors=[], strict={"names": "redact"}))
    text = "Pro paní Novákovou, paní Novákové. Pani Zielińskiej i Pana Wójcika. Für Herrn Müllers Sohn."
    out, _ = redactor.redact_text(text, ["Jana Nováková", "Anna Zielińska", "Piotr Wójcik", "Hans Müller"])
    assert "Nováková"[:6] not in out and "Zieli" not in out and "Wójcik" not in out and "Müller" not in out, out


def test_services_in_strict_mode_match_inflected_forms() -> None:
    policy = {"detectors": [], "strict": {"services": ["massage", "masáž", "botox treatment"]}}
    text = "Two massages, a Massage, masáže, and Botox treatments."
    assert [v for _, v in found(text, **policy)] == [
        "massages", "Massage", "masáže", "Botox treatments",
    ]


def test_deny_list_and_custom_patterns() -> None:
    policy = {
        "detectors": [],
        "deny_list": ["HIV"],
        "custom_patterns": [{"name": "loyalty", "pattern": r"GOLD-\d{6}"}],
    }
    assert found("HIV clinic, member gold-123456", **policy) == [
        ("deny_list", "HIV"), ("loyalty", "gold-123456"),
    ]


def test_allow_list_keeps_the_hotels_own_contacts() -> None:
    policy = {"allow_list": ["+44 20 7946 0958", "@hotel.example"]}
    text = "Call 020 7946 0958 or desk@hotel.example; guest +44 20 7946 0123"
    assert found(text, **policy) == [("phone", "+44 20 7946 0123")]


def test_overlapping_findings_merge_into_the_longest() -> None:
    assert found("4111111111111111@example.com") == [("email", "4111111111111111@example.com")]


# -- operators -----------------------------------------------------------------------


def test_mask_keeps_separators_and_the_last_characters() -> None:
    assert mask("+44 20 7946 0958", 4) == "+** ** **** 0958"
    assert mask("Nováková", 0) == "********"


def test_hash_pseudonym_is_stable_keyed_and_letters_only() -> None:
    first = pseudonym(b"k1", "phone", "+44 20 7946 0958")
    assert first == pseudonym(b"k1", "phone", "+442079460958")
    assert first != pseudonym(b"k2", "phone", "+44 20 7946 0958")
    assert first.isalpha()


def test_hash_action_requires_a_key() -> None:
    policy = NotificationsPolicy(actions={"phone": "hash"})
    with pytest.raises(ValueError, match="hash key"):
        Redactor(policy)
    text, _ = Redactor(policy, hash_key=b"secret").redact_text("Call +44 20 7946 0958")
    assert text.startswith("Call [PHONE:") and "7946" not in text


def test_drop_removes_the_value_from_text() -> None:
    redactor = Redactor(NotificationsPolicy(actions={"email": "drop"}))
    assert redactor.redact_text("Mail jana@example.cz now")[0] == "Mail  now"


# -- policy schema -------------------------------------------------------------------


def test_action_shorthands() -> None:
    policy = NotificationsPolicy.model_validate(
        {"actions": {"card": {"mask": "last4"}, "iban": "redact", "phone": "keep_in_recipient_field",
                     "email": {"redact": "<e-mail>"}, "passport": {"operator": "mask", "keep_last": 2}}}
    )
    assert policy.action("card") == ActionSpec(operator="mask", keep_last=4)
    assert policy.action("phone").operator == "redact"
    assert policy.action("email").label == "<e-mail>"
    assert policy.action("passport").keep_last == 2
    assert policy.action("date_of_birth").operator == "redact"


@pytest.mark.parametrize(
    "section, message",
    [
        ({"detectors": ["card", "ssn"]}, "unknown detector"),
        ({"actions": {"ssn": "redact"}}, "unknown detector"),
        ({"actions": {"card": "shred"}}, "unknown operator"),
        ({"actions": {"card": {"mask": "first4"}}}, "lastN"),
        ({"surprise": 1}, "Extra inputs"),
        ({"channels": [{"name": "sms", "format": "form"}]}, "egress_host"),
        ({"custom_patterns": [{"name": "x", "pattern": "("}]}, "invalid regular expression"),
    ],
)
def test_invalid_policies_are_refused_with_a_reason(section: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NotificationsPolicy.model_validate(section)


def test_strict_mode_enables_names_and_services() -> None:
    strict = NotificationsPolicy(strict=StrictPolicy(services=["massage"]))
    assert {"name", "service"} <= strict.enabled()
    keep_names = NotificationsPolicy(detectors=["name"], strict=StrictPolicy(names="keep"))
    assert "name" not in keep_names.enabled()


def test_channel_matching_by_host_and_path() -> None:
    policy = NotificationsPolicy(
        channels=[
            ChannelRule(name="sms", egress_host="*.sms.example", path=r"/Messages\.json$"),
            ChannelRule(name="mail", smtp=True),
        ]
    )
    assert policy.channel_for("api.sms.example", "/2010/Messages.json").name == "sms"
    assert policy.channel_for("api.sms.example", "/status") is None
    assert policy.channel_for("sms.example.evil", "/Messages.json") is None
    assert policy.smtp_channel().name == "mail"


def test_json_schema_exports_with_titles() -> None:
    schema = NotificationsPolicy.model_json_schema()
    json.dumps(schema)
    assert schema["properties"]["default_region"]["title"] == "Default phone region"
