"""Booking confirmations by e-mail (SMTP) and SMS (a Twilio-shaped HTTP API).

Both messages leak the full card number and the passport number on purpose: the old PMS
cannot be fixed, and removing such data in transit is the gateway's redaction job.
A failed send is reported as a result, never raised: the desk clerk must see what happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
from email.headerregistry import Address
from email.message import EmailMessage
from typing import TYPE_CHECKING

import aiohttp
import aiosmtplib
import jinja2

from gateway.demo.state import Reservation

if TYPE_CHECKING:
    from gateway.demo.app import DemoSettings



@dataclasses.dataclass(frozen=True)
class SendResult:
    """Outcome of one send; `str()` gives the API form: "sent" or "failed: <reason>"."""

    ok: bool
    reason: str = ""

    def __str__(self) -> str:
        return "sent" if self.ok else f"failed: {self.reason}"


SENT = SendResult(ok=True)


def build_email(
    reservation: Reservation, settings: DemoSettings, templates: jinja2.Environment
) -> EmailMessage:
    # The guest's own page, reachable without a login by its secret link (a public guest area).
    link = f"{settings.public_url.rstrip('/')}/guest/booking/{reservation.id}/{reservation.guest_secret}"
    context = {"r": reservation, "property_name": settings.property_name, "link": link}
    message = EmailMessage()
    message["From"] = Address(settings.property_name, addr_spec=settings.mail_from)
    local, _, domain = reservation.email.partition("@")
    message["To"] = Address(reservation.guest_name, local, domain)
    message["Subject"] = f"Booking confirmation {reservation.id} – {reservation.guest_name}"
    message.set_content(templates.get_template("confirmation_email.txt").render(context))
    message.add_alternative(
        templates.get_template("confirmation_email.html").render(context), subtype="html"
    )
    return message


def build_sms_body(reservation: Reservation, settings: DemoSettings) -> str:
    return (
        f"Dear {reservation.guest_name}, your booking {reservation.id} at "
        f"{settings.property_name} from {reservation.arrival:%d/%m/%Y} is confirmed. "
        f"Card ending {reservation.card_number} will be charged on arrival."
    )


async def send_email(message: EmailMessage, settings: DemoSettings) -> SendResult:
    try:
        # Plain SMTP, no STARTTLS: the PMS talks to a relay on the local network.
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            start_tls=False,
            timeout=settings.send_timeout,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return SendResult(ok=False, reason=_reason(exc))
    return SENT


async def send_sms(
    http: aiohttp.ClientSession, reservation: Reservation, settings: DemoSettings
) -> SendResult:
    url = (
        f"{settings.sms_api_url.rstrip('/')}/2010-04-01/Accounts/"
        f"{settings.sms_account_sid}/Messages.json"
    )
    form = {
        "To": reservation.phone.replace(" ", ""),
        "From": settings.sms_from,
        "Body": build_sms_body(reservation, settings),
    }
    try:
        async with http.post(
            url,
            data=form,
            headers={
                "Authorization": aiohttp.encode_basic_auth(
                    settings.sms_account_sid, settings.sms_auth_token
                )
            },
            proxy=settings.http_proxy,
            timeout=aiohttp.ClientTimeout(total=settings.send_timeout),
        ) as response:
            if response.status >= 300:
                return SendResult(ok=False, reason=f"HTTP {response.status} from SMS API")
            await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return SendResult(ok=False, reason=_reason(exc))
    return SENT


async def send_confirmation(
    reservation: Reservation,
    settings: DemoSettings,
    templates: jinja2.Environment,
    http: aiohttp.ClientSession,
) -> dict[str, SendResult]:
    """Send both messages concurrently; returns {"email": ..., "sms": ...}."""
    email, sms = await asyncio.gather(
        send_email(build_email(reservation, settings, templates), settings),
        send_sms(http, reservation, settings),
    )
    return {"email": email, "sms": sms}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
