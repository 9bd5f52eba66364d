"""Built-in channel definitions for the common SMS and e-mail provider APIs.

A policy names a provider instead of describing its API (`channels: [{preset: sendgrid}]`,
`egress_host` and `path` overridable). Each preset is one small declaration, written from
the provider's API reference, saying:

- where the API lives (host, path pattern) and how its body is encoded (`auto`: by the
  request's Content-Type, for APIs that take several);
- `recipients`: the destination address or number - routing data, kept whatever the
  detectors say, or the message could not be delivered;
- `keep`: other routing and protocol values (sender, credentials, template ids) that
  are not guest text and must reach the provider unchanged;
- `names`: the recipient's display name - redacted in strict mode, and used as the known
  name for the body (it is how the engine recognises "Dear Emma" and "Emmě");
- `templates`: template parameter objects (SendGrid `dynamic_template_data`, Brevo
  `params`...): their name-like keys (`first_name`, `NOM`, `vorname`...) are name fields;
- `html`: fields whose value is HTML (scanned as a reader sees it, markup kept);
- `mime`: fields carrying a base64 RFC 5322 message (Amazon SES raw sends).

Every other field is scanned (a field a provider adds later is redacted, not skipped).
Paths follow `gateway.redact.formats.fields`: `[]` is any list element, and a body that
is itself a list (Postmark batch) has its elements' fields at the top.

Amazon SES requests are signed (SigV4 covers the body's hash): a redacted body no longer
matches its signature, so SES through the egress proxy needs the PMS to send unsigned
requests to a signing relay, or the proxy to sign (not provided). The preset is there
for the redaction, and `pms-gateway redact --channel ses` for trying it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TEMPLATE_NAME_KEYS: frozenset[str] = frozenset(
    """
    name fullname guestname customername clientname recipientname contactname
    firstname first givenname lastname last surname familyname
    guest customer
    prenom nom nomclient vorname nachname gastname
    nombre apellido apellidos nome cognome voornaam achternaam
    jmeno prijmeni krestnijmeno meno priezvisko imie nazwisko
    """.split()
)
"""Template parameter keys (lower-cased, `_`/`-`/spaces removed) that hold a guest's name."""


@dataclass(frozen=True)
class Preset:
    """One provider API, as a channel sees it."""

    host: str
    path: str
    format: str
    recipients: tuple[str, ...]
    keep: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    html: tuple[str, ...] = ()
    mime: tuple[str, ...] = ()
    doc: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def channel(self, name: str) -> dict[str, Any]:
        """The ChannelRule fields this preset stands for."""
        return {
            "name": name,
            "egress_host": self.host,
            "path": self.path,
            "format": self.format,
            "fields": [],
            "recipient_field": list(self.recipients),
            "keep_fields": list(self.keep),
            "name_fields": list(self.names),
            "template_fields": list(self.templates),
            "html_fields": list(self.html),
            "mime_fields": list(self.mime),
        }


def _addresses(*prefixes: str, key: str = "email") -> tuple[str, ...]:
    return tuple(f"{p}[].{key}" for p in prefixes)


_SENDGRID_PEOPLE = ("personalizations[].to", "personalizations[].cc", "personalizations[].bcc")
_MAILJET_PEOPLE = ("Messages[].To", "Messages[].Cc", "Messages[].Bcc")
_BREVO_PEOPLE = ("to", "cc", "bcc", "messageVersions[].to", "messageVersions[].cc",
                 "messageVersions[].bcc")
_POSTMARK_ROUTING = ("From", "ReplyTo", "MessageStream", "TemplateId", "TemplateAlias", "Tag")

PRESETS: dict[str, Preset] = {
    "twilio": Preset(
        doc="Twilio Programmable Messaging: POST /2010-04-01/Accounts/{Sid}/Messages.json",
        host="api.twilio.com",
        path=r"^/2010-04-01/Accounts/[^/]+/Messages\.json$",
        format="form",
        recipients=("To",),
        keep=("From", "MessagingServiceSid", "StatusCallback", "ApplicationSid", "MediaUrl",
              "ContentSid", "ValidityPeriod", "SendAt", "ScheduleType"),
    ),
    "vonage": Preset(
        doc="Vonage (Nexmo) SMS API: POST https://rest.nexmo.com/sms/json, form or JSON",
        host="rest.nexmo.com",
        path=r"^/sms/json$",
        format="auto",
        recipients=("to",),
        keep=("from", "api_key", "api_secret", "sig", "callback", "client-ref", "type",
              "status-report-req", "message-class", "ttl", "entity-id", "content-id"),
    ),
    "messagebird": Preset(
        doc="MessageBird SMS: POST https://rest.messagebird.com/messages, JSON or form; "
        "`recipients` is a list or a comma-separated string",
        host="rest.messagebird.com",
        path=r"^/messages$",
        format="auto",
        recipients=("recipients",),
        keep=("originator", "reportUrl", "type", "datacoding", "validity", "scheduledDatetime"),
    ),
    "sendgrid": Preset(
        doc="SendGrid v3 Mail Send: POST https://api.sendgrid.com/v3/mail/send",
        host="api.sendgrid.com",
        path=r"^/v3/mail/send$",
        format="json",
        recipients=_addresses(*_SENDGRID_PEOPLE),
        keep=("from.email", "reply_to.email", "reply_to_list[].email", "template_id",
              "asm.group_id", "batch_id", "ip_pool_name", "send_at", "categories",
              "mail_settings", "tracking_settings"),
        names=_addresses(*_SENDGRID_PEOPLE, key="name"),
        templates=("personalizations[].dynamic_template_data", "personalizations[].substitutions"),
        html=("content[].value",),
    ),
    "mailgun": Preset(
        doc="Mailgun Messages: POST https://api.mailgun.net/v3/{domain}/messages, form or "
        "multipart; `to` may be `Name <address>` (the EU region is api.eu.mailgun.net)",
        host="api.mailgun.net",
        path=r"^/v3/[^/]+/messages$",
        format="auto",
        recipients=("to", "cc", "bcc"),
        keep=("from", "h:Reply-To", "template", "o:tag", "o:tracking", "o:deliverytime",
              "o:testmode", "t:version"),
        html=("html",),
    ),
    "postmark": Preset(
        doc="Postmark: POST https://api.postmarkapp.com/email, /email/batch (a list), "
        "/email/withTemplate, /email/batchWithTemplates (`Messages`)",
        host="api.postmarkapp.com",
        path=r"^/email(?:/batch|/withTemplate|/batchWithTemplates)?$",
        format="json",
        recipients=("To", "Cc", "Bcc", "Messages[].To", "Messages[].Cc", "Messages[].Bcc"),
        keep=_POSTMARK_ROUTING + tuple(f"Messages[].{k}" for k in _POSTMARK_ROUTING),
        templates=("TemplateModel", "Messages[].TemplateModel"),
        html=("HtmlBody", "Messages[].HtmlBody"),
    ),
    "mailjet": Preset(
        doc="Mailjet Send API v3.1: POST https://api.mailjet.com/v3.1/send",
        host="api.mailjet.com",
        path=r"^/v3\.1/send$",
        format="json",
        recipients=_addresses(*_MAILJET_PEOPLE, key="Email"),
        keep=("Messages[].From.Email", "Messages[].ReplyTo.Email", "Messages[].TemplateID",
              "Messages[].TemplateLanguage", "Messages[].CustomID", "Messages[].CustomCampaign",
              "Globals.From.Email", "Globals.TemplateID", "SandboxMode"),
        names=_addresses(*_MAILJET_PEOPLE, key="Name"),
        templates=("Messages[].Variables", "Globals.Variables"),
        html=("Messages[].HTMLPart", "Globals.HTMLPart"),
    ),
    "brevo": Preset(
        doc="Brevo (Sendinblue) transactional e-mail: POST https://api.brevo.com/v3/smtp/email "
        "(older integrations: host api.sendinblue.com)",
        host="api.brevo.com",
        path=r"^/v3/smtp/email$",
        format="json",
        recipients=_addresses(*_BREVO_PEOPLE),
        keep=("sender.email", "sender.id", "replyTo.email", "templateId", "tags",
              "scheduledAt", "batchId"),
        names=_addresses(*_BREVO_PEOPLE, key="name"),
        templates=("params", "messageVersions[].params"),
        html=("htmlContent", "messageVersions[].htmlContent"),
    ),
    "brevo_sms": Preset(
        doc="Brevo transactional SMS: POST https://api.brevo.com/v3/transactionalSMS/sms",
        host="api.brevo.com",
        path=r"^/v3/transactionalSMS/sms$",
        format="json",
        recipients=("recipient",),
        keep=("sender", "type", "tag", "webUrl", "unicodeEnabled", "organisationPrefix"),
    ),
    "ses": Preset(
        doc="Amazon SES v2 SendEmail / SendBulkEmail: POST https://email.{region}.amazonaws.com"
        "/v2/email/outbound-emails (set egress_host to your region's endpoint); Simple, "
        "Raw (base64 MIME) and Template content",
        host="email.eu-west-1.amazonaws.com",
        path=r"^/v2/email/outbound-(?:bulk-)?emails$",
        format="json",
        recipients=("Destination", "BulkEmailEntries[].Destination"),
        keep=("FromEmailAddress", "FromEmailAddressIdentityArn", "ReplyToAddresses",
              "FeedbackForwardingEmailAddress", "FeedbackForwardingEmailAddressIdentityArn",
              "ConfigurationSetName", "EmailTags", "ListManagementOptions",
              "Content.Template.TemplateName", "Content.Template.TemplateArn",
              "DefaultContent.Template.TemplateName", "DefaultContent.Template.TemplateArn"),
        html=("Content.Simple.Body.Html.Data",),
        mime=("Content.Raw.Data",),
    ),
}
"""Every preset, by the name a policy uses."""


def expand(data: Mapping[str, Any]) -> dict[str, Any]:
    """A channel written as `{preset: NAME, ...overrides}` as the full channel fields.

    Raises ValueError (shown with the policy's file and line) for an unknown preset.
    """
    name = data.get("preset")
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    channel = PRESETS[name].channel(str(data.get("name") or name))
    channel.update({k: v for k, v in data.items() if k != "name"})
    return channel


def template_key(key: str) -> str:
    """How template parameter keys are compared: `First_Name` -> `firstname`."""
    return "".join(c for c in key.lower() if c.isalnum())
