"""What the end-to-end notification tests share: the notifications policy (SMS through the
egress proxy, mail through the SMTP relay) and guest data of the demo PMS that must not
leave it."""

from __future__ import annotations

# Reservation 1001 of the demo data: Oliver Bennett.
CARD, PASSPORT, PHONE = "4111111111111111", "533401872", "+442079460018"

NOTIFICATIONS = {
    "channels": [
        {"name": "sms", "egress_host": "localhost", "path": "/Messages.json$", "format": "form",
         "fields": ["Body"], "recipient_field": "To"},
        {"name": "mail", "smtp": True},
    ],
    "detectors": ["card", "iban", "passport"],
    "actions": {"card": {"mask": "last4"}, "iban": "redact", "passport": "redact"},
    "unmatched_egress": "block",
}  # fmt: skip
