"""Alert e-mails through the configured mail server (config `smtp`), with aiosmtplib."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from gateway.config import SmtpSettings

SEND_TIMEOUT = 20.0


class EmailSender:
    def __init__(self, settings: SmtpSettings, recipients: Callable[[], list[str]]) -> None:
        self.settings = settings
        self._recipients = recipients

    @property
    def configured(self) -> bool:
        return self.settings.host is not None

    async def send(self, subject: str, body: str) -> bool:
        """False when there is nobody to send to; raises on delivery errors."""
        recipients = self._recipients()
        if not recipients or self.settings.host is None:
            return False
        message = EmailMessage()
        message["From"] = self.settings.sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self.settings.sender.rpartition("@")[2] or None)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        await aiosmtplib.send(
            message,
            hostname=self.settings.host,
            port=self.settings.port,
            username=self.settings.username,
            password=self.settings.password,
            start_tls=self.settings.starttls,
            use_tls=self.settings.use_tls,
            timeout=SEND_TIMEOUT,
        )
        return True
