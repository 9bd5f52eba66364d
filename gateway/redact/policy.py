"""The `notifications:` section of a policy: what outbound guest data may leave, and how.

One typed model per concern, each field with its default, title and description, so the
JSON Schema, the error messages and the option reference come from the same place. The
engine (`gateway.redact.engine`) reads these models and nothing else; strictness (clinics,
spas) is configuration, not a separate code path.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

BUILTIN_DETECTORS: tuple[str, ...] = (
    "card",
    "iban",
    "email",
    "phone",
    "passport",
    "date_of_birth",
    "name",
    "service",
    "deny_list",
)
"""Detector names the engine knows; custom patterns add their own names."""

Operator = Literal["keep", "redact", "mask", "hash", "drop", "block"]

_OPERATORS: frozenset[str] = frozenset(("keep", "redact", "mask", "hash", "drop", "block"))

# `keep_in_recipient_field` (seen in hand-written policies) means "redact it, except in
# the channel's recipient field". The recipient field is never redacted anyway, so it is
# a readable synonym of `redact`.
_OPERATOR_SYNONYMS: dict[str, str] = {"keep_in_recipient_field": "redact"}

_MASK_SHORTHAND = re.compile(r"^last(\d{1,2})$")


def _parse_keep_last(value: object) -> int:
    """`last4`, `4` or `"4"` -> 4: how many trailing characters a mask leaves visible."""
    if isinstance(value, bool):
        raise ValueError("mask takes `lastN` (e.g. last4) or a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            return int(text)
        match = _MASK_SHORTHAND.match(text)
        if match:
            return int(match.group(1))
    raise ValueError(f"mask takes `lastN` (e.g. last4) or a number, not {value!r}")


class ActionSpec(BaseModel):
    """What to do with one detector's findings.

    Written in a policy as a bare operator (`iban: redact`), as a one-key mapping
    (`card: {mask: last4}`, `card: {redact: "[CARD]"}`), or in full
    (`{operator: mask, keep_last: 4}`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    operator: Operator = Field(
        "redact",
        title="Operator",
        description="keep, redact (replace with a label), mask (keep the last characters), "
        "hash (keyed pseudonym), drop (remove the value or its field) or block (refuse to send).",
    )
    keep_last: int = Field(
        4,
        ge=0,
        le=16,
        title="Characters kept by mask",
        description="How many trailing letters or digits `mask` leaves visible.",
    )
    label: str | None = Field(
        None,
        title="Replacement label",
        description="Text that `redact` puts in place of the value; default `[DETECTOR]`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            operator = _OPERATOR_SYNONYMS.get(data, data)
            if operator not in _OPERATORS:
                raise ValueError(
                    f"unknown operator {data!r}; use one of {', '.join(sorted(_OPERATORS))}"
                )
            return {"operator": operator}
        if isinstance(data, dict) and len(data) == 1:
            ((key, value),) = data.items()
            key = _OPERATOR_SYNONYMS.get(key, key)
            if key == "mask":
                return {"operator": "mask", "keep_last": _parse_keep_last(value)}
            if key == "redact" and isinstance(value, str):
                return {"operator": "redact", "label": value}
            if key in _OPERATORS and value in (True, None):
                return {"operator": key}
        return data

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        full = handler(schema)
        return {
            "anyOf": [
                {"enum": sorted(_OPERATORS | set(_OPERATOR_SYNONYMS))},
                {
                    "type": "object",
                    "properties": {
                        "mask": {"anyOf": [{"type": "string", "pattern": r"^last\d{1,2}$"},
                                           {"type": "integer", "minimum": 0}]},
                        "redact": {"type": "string"},
                    },
                    "minProperties": 1,
                    "maxProperties": 1,
                    "additionalProperties": False,
                },
                full,
            ],
            "title": "Action",
            "description": cls.__doc__.splitlines()[0] if cls.__doc__ else "",
        }


DEFAULT_ACTIONS: dict[str, ActionSpec] = {
    "card": ActionSpec(operator="mask", keep_last=4),  # PCI display rule: last four only
}
"""Per-detector defaults where `redact` is not the right one."""


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what}: invalid regular expression {pattern!r}: {exc}") from None


DEFAULT_ID_CONTEXT: tuple[str, ...] = (
    "passport",
    "passeport",
    "reisepass",
    "reisepassnummer",
    "pass",
    "passnummer",
    "ausweisnummer",
    "personalausweisnummer",
    "pas",
    "pasu",
    "cestovní pas",
    "cestovního pasu",
    "číslo pasu",
    "čísla pasu",
    "číslo dokladu",
    "ID",
    "ID card",
    "identity card",
    "carte d'identité",
    "pièce d'identité",
    "personalausweis",
    "ausweis",
    "občanský průkaz",
    "OP",
    "document",
    "document number",
    # Italian, Spanish, Portuguese, Dutch, Polish, Slovak
    "passaporto",
    "carta d'identità",
    "carta di identità",
    "documento",
    "documento d'identità",
    "pasaporte",
    "DNI",
    "NIE",
    "documento de identidad",
    "passaporte",
    "paspoort",
    "paspoortnummer",
    "identiteitskaart",
    "ID-kaart",
    "paszport",
    "paszportu",
    "dowód osobisty",
    "numer dowodu",
    "cestovný pas",
    "číslo pasu",
    "občiansky preukaz",
)
"""Words that must precede a passport/ID number for it to count as one."""


class IdPattern(BaseModel):
    """One country's passport or identity-card number format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(
        ...,
        title="Number pattern",
        description="Regular expression for the number itself (anchored on non-alphanumerics).",
    )
    context: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ID_CONTEXT),
        title="Context words",
        description="The number counts only when one of these words precedes it nearby.",
    )

    @field_validator("pattern")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        _compile(value, "passport pattern")
        return value


DEFAULT_PASSPORT_PATTERNS: dict[str, IdPattern] = {
    "GB": IdPattern(pattern=r"\d{9}"),
    "US": IdPattern(pattern=r"[A-Z]\d{8}|\d{9}"),
    "FR": IdPattern(pattern=r"\d{2}[A-Z]{2}\d{5}"),
    "DE": IdPattern(pattern=r"[CFGHJKLMNPRTVWXYZ][CFGHJKLMNPRTVWXYZ0-9]{8}"),
    "CZ": IdPattern(pattern=r"\d{8,9}"),
    "ES": IdPattern(pattern=r"[A-Z]{3}\d{6}"),
    "IT": IdPattern(pattern=r"[A-Z]{2}\d{5}[A-Z]{2}"),
    "NL": IdPattern(pattern=r"[A-Z]{2}[A-Z0-9]{6}\d"),
    "generic": IdPattern(pattern=r"[A-Z]{1,2}\d{6,8}"),
}

DEFAULT_DOB_CONTEXT: tuple[str, ...] = (
    "born",
    "born on",
    "DOB",
    "D.O.B.",
    "date of birth",
    "birth date",
    "birthdate",
    "né le",
    "née le",
    "né(e) le",
    "date de naissance",
    "geboren",
    "geboren am",
    "geb.",
    "Geburtsdatum",
    "narozen",
    "narozena",
    "narozen(a)",
    "datum narození",
    "data narození",
    "narození",
    "nar.",
    # Italian, Spanish, Portuguese, Dutch, Polish, Slovak, Hungarian, Nordic
    "nato il",
    "nata il",
    "nato/a il",
    "nato",
    "nata",
    "data di nascita",
    "fecha de nacimiento",
    "nacido el",
    "nacida el",
    "nacimiento",
    "data de nascimento",
    "nascido em",
    "nascida em",
    "geboren op",
    "geboortedatum",
    "geb. datum",
    "data urodzenia",
    "urodzony",
    "urodzona",
    "ur.",
    "dátum narodenia",
    "narodený",
    "narodená",
    "születési dátum",
    "született",
    "fødselsdato",
    "født",
    "födelsedatum",
    "född",
    "syntymäaika",
)


DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "GB", "IE", "FR", "DE", "AT", "CH", "NL", "BE", "IT", "ES", "PT", "CZ", "SK", "PL", "HU",
    "DK", "SE", "NO", "FI", "US", "CA", "AU",
)
"""Guest markets of European hotels: national numbers from these countries are read."""


class CustomPattern(BaseModel):
    """An operator-defined regular expression, reported under its own detector name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        ...,
        pattern=r"^[a-z][a-z0-9_]*$",
        title="Detector name",
        description="Name used in `actions:`, findings and the audit trail.",
    )
    pattern: str = Field(..., title="Pattern", description="Regular expression to find.")
    ignore_case: bool = Field(
        True, title="Ignore case", description="Match regardless of letter case."
    )

    @field_validator("pattern")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        _compile(value, "custom pattern")
        return value

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in BUILTIN_DETECTORS:
            raise ValueError(f"{value!r} is a built-in detector name; choose another")
        return value


class StrictPolicy(BaseModel):
    """Clinics and spas: names and treatments never leave, and doubt means do not send."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: Literal["redact", "keep"] = Field(
        "redact",
        title="Guest names",
        description="redact: the recipient's name is removed wherever it appears, in any "
        "inflected form.",
    )
    services: list[str | dict[str, list[str]]] = Field(
        default_factory=list,
        title="Service names",
        description="Treatments that reveal health data (e.g. massage, physiotherapy); "
        "removed in any inflected form. A service may list its translations: "
        "`{massage: [Massage, masáž, massaggio]}`.",
    )

    @field_validator("services", mode="before")
    @classmethod
    def _services_mapping(cls, value: Any) -> Any:
        """`services: {massage: [masáž, ...], sauna: []}` is the same as a list of
        one-key mappings."""
        if isinstance(value, dict):
            return [{str(k): list(v or [])} for k, v in value.items()]
        return value

    @property
    def service_terms(self) -> tuple[str, ...]:
        """Every service name and translation, as the detector matches them."""
        terms: list[str] = []
        for service in self.services:
            if isinstance(service, str):
                terms.append(service)
            else:
                for name, translations in service.items():
                    terms += [name, *translations]
        return tuple(dict.fromkeys(t for t in terms if t.strip()))
    leftover: Literal["block", "keep"] = Field(
        "block",
        title="Leftover findings",
        description="block: after redaction the message is scanned again and not sent if "
        "anything is still found.",
    )


class ChannelRule(BaseModel):
    """One way notifications leave: an SMS/e-mail provider API, or the SMTP relay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str | None = Field(
        None,
        title="Provider preset",
        description="A built-in provider definition (twilio, vonage, messagebird, sendgrid, "
        "mailgun, postmark, mailjet, brevo, brevo_sms, ses); other keys override it.",
    )
    name: str = Field(..., title="Name", description="Shown in findings and the audit trail.")
    egress_host: str | None = Field(
        None,
        title="Provider host",
        description="Host name of the provider API (`*.example.com` matches sub-domains).",
    )
    path: str | None = Field(
        None,
        title="Path pattern",
        description="Regular expression searched in the request path; none = any path.",
    )
    format: Literal["form", "json", "multipart", "text", "auto"] = Field(
        "text",
        title="Body format",
        description="How the request body is encoded: form, json, multipart, text, or auto "
        "(by the request's Content-Type).",
    )
    fields: list[str] = Field(
        default_factory=list,
        title="Fields to redact",
        description="Field paths such as `Body`, `message.text`, `to[].name`; empty = every "
        "string field.",
    )
    recipient_field: str | list[str] | None = Field(
        None,
        title="Recipient field(s)",
        description="Field(s) holding the destination (e.g. `To`); kept as is (routing data), "
        "display names in them (`Jana <jana@example.cz>`) are learnt as the guest's name.",
    )
    keep_fields: list[str] = Field(
        default_factory=list,
        title="Kept fields",
        description="Other routing or protocol fields passed unchanged (sender, credentials, "
        "template ids).",
    )
    name_fields: list[str] = Field(
        default_factory=list,
        title="Name fields",
        description="Fields whose values are the guest's name, to be removed everywhere else.",
    )
    template_fields: list[str] = Field(
        default_factory=list,
        title="Template parameter objects",
        description="Objects of template parameters; their name-like keys (first_name, NOM, "
        "vorname...) are name fields.",
    )
    html_fields: list[str] = Field(
        default_factory=list,
        title="HTML fields",
        description="Fields whose value is HTML: scanned as a reader sees it, markup kept.",
    )
    mime_fields: list[str] = Field(
        default_factory=list,
        title="MIME fields",
        description="Fields holding a base64 e-mail message (SES raw): redacted as the relay "
        "redacts mail.",
    )
    smtp: bool = Field(
        False,
        title="SMTP channel",
        description="This rule describes mail passing through the SMTP relay.",
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        """`{preset: sendgrid, egress_host: ...}`: the preset's fields, overridden."""
        if isinstance(data, dict) and data.get("preset") is not None:
            from gateway.redact.presets import expand

            return expand(data)
        return data

    @property
    def recipient_fields(self) -> tuple[str, ...]:
        """The recipient field(s) as a tuple (a policy may write one or a list)."""
        if self.recipient_field is None:
            return ()
        if isinstance(self.recipient_field, str):
            return (self.recipient_field,)
        return tuple(self.recipient_field)

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value, "channel path")
        return value

    @model_validator(mode="after")
    def _host_or_smtp(self) -> ChannelRule:
        if not self.smtp and not self.egress_host:
            raise ValueError(f"channel {self.name!r} needs egress_host (or smtp: true)")
        return self

    def matches(self, host: str, path: str) -> bool:
        """Whether an outbound HTTP request to `host` + `path` belongs to this channel."""
        if self.smtp or not self.egress_host:
            return False
        host = host.lower().rstrip(".")
        rule = self.egress_host.lower().rstrip(".")
        if rule.startswith("*."):
            if not host.endswith(rule[1:]):
                return False
        elif host != rule:
            return False
        if self.path is None:
            return True
        # Channel selection ignores case and a trailing slash: `Messages.JSON` and
        # `Messages.json/` must not slip past a channel written for `Messages.json` (the
        # provider may well serve them). `path` is the canonical path (one decoding, dot
        # segments and `//` resolved: `gateway.proxy.canonical`).
        pattern = re.compile(self.path, re.IGNORECASE)
        bare = path.rstrip("/") or "/"
        return pattern.search(path) is not None or pattern.search(bare) is not None


class NotificationsPolicy(BaseModel):
    """Outbound redaction of guest data in notifications (SMS and e-mail)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_region: str = Field(
        "GB",
        pattern=r"^[A-Z]{2}$",
        title="Default phone region",
        description="Country (ISO 3166 alpha-2) assumed for phone numbers written without "
        "an international prefix.",
    )
    phone_regions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PHONE_REGIONS),
        title="Guest phone regions",
        description="Countries whose national-format numbers are recognised (after a phone "
        "word, or written as a phone number); default: the usual guest markets of "
        "European hotels.",
    )
    detectors: list[str] = Field(
        default_factory=lambda: ["card", "iban", "email", "phone", "passport", "date_of_birth"],
        title="Enabled detectors",
        description="Which of card, iban, email, phone, passport, date_of_birth, name, "
        "service, deny_list run; custom patterns always run.",
    )
    actions: dict[str, ActionSpec] = Field(
        default_factory=dict,
        title="Actions",
        description="Per detector: keep, redact, mask (e.g. {mask: last4}), hash, drop or "
        "block. Default: redact; cards {mask: last4}.",
    )
    channels: list[ChannelRule] = Field(
        default_factory=list,
        title="Channels",
        description="The provider APIs and the SMTP relay that notifications leave through.",
    )
    unmatched_egress: Literal["pass", "block"] = Field(
        "pass",
        title="Unmatched egress",
        description="What the egress proxy does with requests to hosts no channel names.",
    )
    unmatched_channel_host: Literal["block", "pass"] = Field(
        "block",
        title="Unmatched path on a channel host",
        description="What the egress proxy does with a request to a channel's host whose path "
        "matches no channel (block: a respelt path never slips past its channel).",
    )
    attachments: Literal["keep", "drop", "block"] = Field(
        "keep",
        title="Attachments",
        description="E-mail attachments and multipart files: keep, drop them, or block the "
        "message.",
    )
    passport_patterns: dict[str, IdPattern] = Field(
        default_factory=lambda: dict(DEFAULT_PASSPORT_PATTERNS),
        title="Passport and ID patterns",
        description="Per country, the number format and the context words it needs.",
    )
    context_window: int = Field(
        40,
        ge=5,
        le=200,
        title="Context window",
        description="How many characters before a passport number or date of birth its "
        "context word may stand.",
    )
    date_of_birth_context: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DOB_CONTEXT),
        title="Date of birth context",
        description="A date counts as a date of birth only after one of these words.",
    )
    deny_list: list[str] = Field(
        default_factory=list,
        title="Deny list",
        description="Words or phrases always removed (any inflected form), reported as "
        "`deny_list`.",
    )
    custom_patterns: list[CustomPattern] = Field(
        default_factory=list,
        title="Custom patterns",
        description="Extra regular expressions, each reported under its own name.",
    )
    allow_list: list[str] = Field(
        default_factory=list,
        title="Allow list",
        description="Values never redacted, e.g. the hotel's own phone number or e-mail "
        "address (`@hotel.example` allows a whole domain).",
    )
    strict: StrictPolicy | None = Field(
        None,
        title="Strict mode",
        description="Clinics and spas: redact names and treatments, block what remains.",
    )

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, value: list[str]) -> list[str]:
        import phonenumbers

        unknown = [r for r in value if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone region(s) {', '.join(unknown)}; use ISO 3166 "
                             "alpha-2 codes such as GB, FR, CZ")
        return list(dict.fromkeys(value))

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value: list[str]) -> list[str]:
        unknown = [d for d in value if d not in BUILTIN_DETECTORS]
        if unknown:
            raise ValueError(
                f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(BUILTIN_DETECTORS)}"
            )
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _actions_name_detectors(self) -> NotificationsPolicy:
        known = set(BUILTIN_DETECTORS) | {p.name for p in self.custom_patterns}
        unknown = sorted(set(self.actions) - known)
        if unknown:
            raise ValueError(
                f"actions for unknown detector(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        names = [p.name for p in self.custom_patterns]
        if len(names) != len(set(names)):
            raise ValueError("custom pattern names must be unique")
        return self

    def action(self, detector: str) -> ActionSpec:
        """The effective action for a detector: configured, else its default."""
        spec = self.actions.get(detector)
        if spec is not None:
            return spec
        return DEFAULT_ACTIONS.get(detector, ActionSpec())

    def enabled(self) -> frozenset[str]:
        """Every detector that runs, with what strict mode turns on."""
        active = set(self.detectors)
        if self.strict is not None:
            if self.strict.names == "redact":
                active.add("name")
            else:
                active.discard("name")
            if self.strict.services:
                active.add("service")
        if self.deny_list:
            active.add("deny_list")
        active.update(p.name for p in self.custom_patterns)
        return frozenset(active)

    def channel_for(self, host: str, path: str) -> ChannelRule | None:
        """The first HTTP channel an outbound request belongs to, if any; `path` is the
        canonical path."""
        return next((c for c in self.channels if c.matches(host, path)), None)

    def names_host(self, host: str) -> bool:
        """Whether some HTTP channel names `host`, whatever its path pattern."""
        return any(c.model_copy(update={"path": None}).matches(host, "/") for c in self.channels)

    def unmatched_action(self, host: str) -> Literal["pass", "block"]:
        """What happens to a request to `host` that matches no channel."""
        if self.unmatched_egress == "block":
            return "block"
        return self.unmatched_channel_host if self.names_host(host) else "pass"

    def smtp_channel(self) -> ChannelRule | None:
        """The channel describing mail through the SMTP relay, if configured."""
        return next((c for c in self.channels if c.smtp), None)
