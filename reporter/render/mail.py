"""The e-mailed report: a small HTML body with inline images, a text part, the full report attached.

Where it sits: after the reports are written. :func:`build` makes the MIME
message from the same view model as report.html; :func:`send` hands it to an
SMTP server. The structure is the one that renders in Gmail, Outlook and Apple
Mail alike::

    multipart/mixed
      multipart/alternative
        text/plain                 the verdict, the flagged images, where the report is
        multipart/related
          text/html                CSS inlined, table layout, images as cid:
          image/jpeg ...           one part per cid
      text/html (attachment)       report.html
      application/vnd...sheet      report.xlsx (when written)

Gmail and Outlook do not show data: URIs, hence cid: parts; Gmail clips HTML
over about 102 KB, hence a body of the flagged images only, within
``BODY_LIMIT``, and the whole report (and the workbook) attached.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import itertools
import logging
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import css_inline
import pandas as pd

from ..config import Smtp
from ..errors import DeliveryError
from ..record import RunRecord
from .html import view
from .templates import environment
from .view import subject

__all__ = [
    "ATTACHMENT_TYPES",
    "BODY_LIMIT",
    "build",
    "fewer",
    "Files",
    "MAX_BODY_CHARTS",
    "MAX_BODY_ROWS",
    "MAX_TEXT_ROWS",
    "send",
    "Sent",
    "text",
    "wire_size",
]

log = logging.getLogger("reporter")

BODY_LIMIT = 100_000  # bytes of HTML in the body
ATTACHMENT_TYPES = {
    ".html": ("text", "html"),
    ".xlsx": ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
}
MAX_BODY_CHARTS = 4  # Levey-Jennings charts of flagged slots in the body
MAX_BODY_ROWS = 20  # flagged images shown in the body; the attached report has them all
MAX_TEXT_ROWS = 50  # flagged images listed in the plain-text part


@dataclass(frozen=True)
class Files:
    """The reports attached to the message, and those too large to attach."""

    attached: tuple[Path, ...]
    omitted: tuple[Path, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.attached]

    def text(self) -> str:
        lines = [f"Attached: {', '.join(self.names)}." if self.attached else "Nothing attached."]
        lines += [
            f"Not attached (too large for e-mail): {p.name}, in {p.parent}" for p in self.omitted
        ]
        return "\n".join(lines)


def _body(
    frame, record, baseline_thumbnail, rows_shown: int, templates, files, charts=()
) -> tuple[str, dict]:
    parts: dict[str, tuple[bytes, str]] = {}  # cid -> (bytes, image subtype)

    def cid(data: bytes | None, subtype: str = "jpeg") -> str | None:
        if not data:
            return None
        name = make_msgid(domain="reporter.invalid")[1:-1]
        parts[name] = (data, subtype)
        return f"cid:{name}"

    # Since when: the Levey-Jennings charts of the flagged slots (they come first).
    shown_charts = [
        {"title": c.title, "caption": c.caption, "src": cid(c.png(), "png")}
        for c in charts
        if c.status != "PASS"
    ][:MAX_BODY_CHARTS]

    report = view(frame, record, None, picture=lambda jpeg: None)
    report.baseline_thumbnail = cid(baseline_thumbnail)  # what every row is compared with
    flagged = report.flagged[:rows_shown]
    # Pictures only for the rows the body shows: each is a part of the message.
    shown = {row.file for row in flagged}
    small = frame[frame["file"].isin(shown)]
    pictures = view(small, record, None, picture=cid, large=False)
    by_file = {row.file: row for row in pictures.rows}
    for row in flagged:
        row.thumbnail, row.diff_map = by_file[row.file].thumbnail, by_file[row.file].diff_map
    page = (
        environment(templates)
        .get_template("mail.html.j2")
        .render(
            report=report,
            rows=flagged,
            hidden=len(report.flagged) - len(flagged),
            files=files,
            charts=shown_charts,
        )
    )
    inliner = css_inline.CSSInliner(load_remote_stylesheets=False)
    return inliner.inline(page), parts


def text(frame: pd.DataFrame, record: RunRecord, files: Files, where: str, templates=None) -> str:
    """The plain-text part, whole on its own (a client that shows only text, a pager, a
    ticket system): the verdict, every flagged image with its most severe reason, and
    where the full report is."""
    report = view(frame, record, None, picture=lambda jpeg: None)
    return (
        environment(templates)
        .get_template("mail.txt.j2")
        .render(
            report=report,
            files=files,
            where=where,
            host=socket.gethostname(),
            max_rows=MAX_TEXT_ROWS,
        )
    )


def build(
    frame: pd.DataFrame,
    record: RunRecord,
    *,
    where: str,
    sender: str,
    recipients: tuple[str, ...],
    baseline_thumbnail: bytes | None = None,
    attachments: tuple[Path, ...] = (),
    omitted: tuple[Path, ...] = (),
    templates: Path | None = None,
    charts: tuple = (),
) -> EmailMessage:
    """The whole message, ready to write as .eml or to send. ``where`` is the folder the
    run's outputs are in, on this machine."""
    rows_shown = MAX_BODY_ROWS
    files = Files(attachments, omitted)
    body, parts = _body(frame, record, baseline_thumbnail, rows_shown, templates, files, charts)
    while len(body.encode("utf-8")) > BODY_LIMIT and rows_shown > 0:
        rows_shown //= 2  # long reasons or file names: show fewer rows, never clip
        body, parts = _body(frame, record, baseline_thumbnail, rows_shown, templates, files, charts)
    msg = EmailMessage()
    msg["Subject"] = subject(record)  # view.py
    msg["From"] = sender
    msg["To"] = ", ".join(recipients) if recipients else sender
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="reporter.invalid")
    msg.set_content(text(frame, record, files, where, templates))
    msg.add_alternative(body, subtype="html")
    html_part = msg.get_payload()[1]
    for name, (data, subtype) in parts.items():
        html_part.add_related(data, maintype="image", subtype=subtype, cid=f"<{name}>")
    for path in attachments:
        # As bytes (base64): a text part would have its line endings rewritten on the way.
        maintype, subtype = ATTACHMENT_TYPES.get(path.suffix, ("application", "octet-stream"))
        msg.add_attachment(
            path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name
        )
    return msg


def fewer(paths: tuple[Path, ...]) -> list[tuple[Path, ...]]:
    """Each choice of attachments, most first, an earlier report before a later one:
    (html, xlsx), (html,), (xlsx,), (). The message is sent with the first that the
    server takes."""
    choices = itertools.product((True, False), repeat=len(paths))
    return [tuple(p for p, keep in zip(paths, c, strict=True) if keep) for c in choices]


@dataclass(frozen=True)
class Sent:
    """What reached the server, and why a message with more attachments did not."""

    message: EmailMessage
    too_large: str = ""  # the server's word on the last larger message; "" if none
    # The recipients the server refused while it took the others, with its answer.
    refused: dict[str, str] = field(default_factory=dict)


def wire_size(msg: EmailMessage) -> int:
    """The message's size as smtplib sends it (CRLF line ends) and as SIZE counts it."""
    with io.BytesIO() as buffer:
        BytesGenerator(buffer).flatten(msg, linesep="\r\n")
        return buffer.tell()


def send(messages: Iterable[EmailMessage], recipients: tuple[str, ...], smtp: Smtp) -> Sent:
    """Hand the first of ``messages`` that the server takes to it within ``smtp.timeout``
    seconds in all, or raise DeliveryError saying why.

    ``messages`` are one message with fewer attachments each time: a message over the
    size the server gives in its EHLO answer (SIZE) is not offered, and one it refuses
    for its size (552, which a server may say without a SIZE) is followed by the next.
    Postfix takes 10 MB by default, under the attachments' own budget.

    smtplib's timeout holds for each socket operation: a server that trickles its
    greeting a byte at a time would hold the run (and its series' lock) for ever.
    The delivery runs in a thread; past the deadline its socket is shut, which ends it.
    """
    where = f"{smtp.host}:{smtp.effective_port()}"
    held: dict[str, Any] = {}

    def deliver() -> None:
        try:
            held["sent"] = _deliver(iter(messages), recipients, smtp, held)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            held["error"] = exc

    worker = threading.Thread(target=deliver, name="smtp-delivery", daemon=True)
    worker.start()
    worker.join(smtp.timeout)
    if worker.is_alive():
        sock = getattr(held.get("client"), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        worker.join(2.0)
        raise DeliveryError(
            f"could not send the e-mail through {where}: the server did not finish within "
            f"{smtp.timeout:g} s ([email] timeout, for the whole delivery)"
        )
    if "error" in held:
        raise held["error"]
    return held["sent"]


TOO_LARGE = 552  # "exceeded storage allocation": the message's size, at MAIL or after DATA


def _deliver(
    messages: Iterator[EmailMessage], recipients: tuple[str, ...], smtp: Smtp, held: dict
) -> Sent:
    port = smtp.effective_port()
    where = f"{smtp.host}:{port}"
    try:
        if smtp.ssl:
            client = smtplib.SMTP_SSL(timeout=smtp.timeout, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(timeout=smtp.timeout)
        # What SMTP(host) would set: the name TLS verifies (SMTP_SSL, STARTTLS) against.
        client._host = smtp.host
        held["client"] = client  # before connecting: the greeting is read in connect()
        client.connect(smtp.host, port)
        with client:
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if smtp.user:
                if not (smtp.starttls or smtp.ssl or _this_machine(client.sock)):
                    log.warning(
                        "the SMTP password goes to %s unencrypted: set [email] starttls or ssl",
                        where,
                    )
                client.login(smtp.user, smtp.password or "")
            client.ehlo_or_helo_if_needed()
            limit = _size_limit(client.esmtp_features.get("size", ""))
            too_large = ""
            for msg in messages:
                size = wire_size(msg) if limit else None  # a whole flattening: only if needed
                if size is not None and size > limit:
                    too_large = f"it takes messages up to {_mb(limit)}, and this one is {_mb(size)}"
                    continue
                try:
                    refused = client.send_message(msg, to_addrs=list(recipients))
                except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                    if exc.smtp_code != TOO_LARGE:
                        raise
                    said = exc.smtp_error
                    if isinstance(said, bytes):
                        said = said.decode("utf-8", "replace")
                    size = size if size is not None else wire_size(msg)
                    too_large = f"it refused this one, of {_mb(size)}, for its size ({said})"
                    continue  # smtplib has reset the transaction
                return Sent(msg, too_large, _refusals(refused))
            raise DeliveryError(
                f"could not send the e-mail through {where}, even without attachments: " + too_large
            )
    except (OSError, smtplib.SMTPException) as exc:  # timeouts are OSErrors
        raise DeliveryError(
            f"could not send the e-mail through {where}: {exc}{_hint(exc, smtp, held)}"
        ) from None


def _hint(exc: BaseException, smtp: Smtp, held: dict) -> str:
    """What to change, for the failures a lab's own mail server gives most."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "mismatch" in (exc.verify_message or ""):
            return f" (give --smtp-host as a name the server's certificate holds, not {smtp.host})"
        return (
            " (a certificate of the lab's own authority: give that authority's certificate"
            " with SSL_CERT_FILE=/path/to/ca.pem)"
        )
    said = str(exc).lower()
    client = held.get("client")
    offers_tls = client is not None and client.has_extn("starttls")
    # No AUTH offered before STARTTLS (smtplib's SMTPNotSupportedError), not a wrong password.
    no_auth_yet = offers_tls and isinstance(exc, smtplib.SMTPNotSupportedError)
    if not (smtp.starttls or smtp.ssl) and (
        "starttls" in said or "encryption required" in said or no_auth_yet
    ):
        return " (the server asks for TLS first: set [email] starttls, or --smtp-starttls)"
    return ""


def _this_machine(sock) -> bool:
    """Whether the server at the other end of ``sock`` is this machine, where a password
    cannot be overheard: told by the address connected to, not by the name given, which
    may be the machine's own name (Debian's resolves to 127.0.1.1) or its own address."""
    try:
        return _same_machine(sock.getpeername()[0], sock.getsockname()[0])
    except (AttributeError, IndexError, OSError, TypeError):  # not an IP socket, or closed
        return False


def _same_machine(peer: str, own: str) -> bool:
    """Whether a connection from address ``own`` to ``peer`` stays on this machine."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1
    return address.is_loopback or peer == own


def _refusals(refused: dict) -> dict[str, str]:
    """smtplib's refused recipients, address -> "550 no such user"."""
    said = {}
    for address, (code, text) in refused.items():
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        said[address] = f"{code} {text}"
    return said


def _size_limit(text: str) -> int | None:
    """The server's SIZE in bytes; None when it gives none, or 0 (no limit)."""
    try:
        return int(text) or None
    except ValueError:
        return None


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} KB"
