"""The e-mailed report: MIME structure, cid: images, body size, and delivery to a real
SMTP server on loopback (aiosmtpd), including a failed delivery."""

from __future__ import annotations

import email
import json
import re
import smtplib
import socket
import ssl
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import SAMPLES, smooth_image, write

from reporter.cli import main


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=policy.default)


def structure(part) -> list:
    """The tree of content types, e.g. ["multipart/mixed", [...]]."""
    if part.is_multipart():
        return [part.get_content_type(), [structure(p) for p in part.iter_parts()]]
    return part.get_content_type()


def check_message(msg) -> None:
    """The structure that renders in Gmail and Outlook, with every cid: resolved."""
    assert msg.get_content_type() == "multipart/mixed"
    alternative, *attachments = list(msg.iter_parts())
    assert alternative.get_content_type() == "multipart/alternative"
    text, related = list(alternative.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, *images = list(related.iter_parts())
    assert html.get_content_type() == "text/html"
    body = html.get_content()
    assert len(body.encode("utf-8")) < 100_000
    cids = set(re.findall(r'src="cid:([^"]+)"', body))
    parts = {p["Content-ID"].strip("<>") for p in images}
    assert cids and cids == parts
    for image in images:
        assert image.get_content_type() in ("image/jpeg", "image/png")  # pictures, charts
        assert image.get_content_disposition() == "inline"  # not shown as attachments
    assert "data:" not in body and "<style" not in body  # Gmail and Outlook: inline styles only
    assert 'style="' in body
    assert [a.get_filename() for a in attachments] == ["report.html", "report.xlsx"]
    assert attachments[1].get_content_type().endswith("spreadsheetml.sheet")
    assert all(a.get_content_disposition() == "attachment" for a in attachments)


def test_eml_has_the_structure_and_every_cid(tmp_path, capsys):
    eml = tmp_path / "qc.eml"
    code = main(
        [
            "run",
            str(SAMPLES),
            "--out",
            str(tmp_path / "o"),
            "--eml",
            str(eml),
            "--series",
            "FSC-SSC",
            "-q",
        ]
    )
    assert code == 1
    msg = parse(eml.read_bytes())
    check_message(msg)
    subject = (
        r"\[QC FAIL\] 4 of 12 images flagged - FSC-SSC - \d{4}-\d\d-\d\d \d\d:\d\d [+-]\d\d:\d\d"
    )
    assert re.fullmatch(subject, msg["Subject"].strip())
    text = msg.get_body(("plain",)).get_content()
    assert "report.html, attached" in text and "report.xlsx, attached" in text
    # Whole on its own: the verdict, each flagged image and its most severe reason, and
    # where the run's outputs are (absolute, on which host), never "see the log".
    assert text.startswith("QC FAIL: 4 of 12 images flagged\n")
    assert "see the log" not in text
    assert f"Every output of the run is in {tmp_path / 'o'} on {socket.gethostname()}." in text
    lines = text.splitlines()
    debris = lines.index("  FAIL   fault_debris.png")
    assert lines[debris + 1].strip().startswith("occupancy_change 0.480 > fail limit")
    html = msg.get_body(("html",)).get_content()
    # The baseline's thumbnail heads the body: the rows are compared with it.
    baseline = re.search(r'<img src="cid:([^"]+)" alt="baseline baseline.png"', html)
    assert baseline and any(p["Content-ID"] == f"<{baseline.group(1)}>" for p in msg.walk())
    shown = set(re.findall(r"fault_\w+\.png", html))
    assert len(shown) == 4 and "normal_day" not in html  # flagged images only
    assert "8 images passed" in html
    # Every flagged sample image has a FAIL-level reason: each leads its list, marked.
    debris = html[html.index("fault_debris.png") :]
    first = re.search(r'<div class="reason[^"]*"[^>]*>(.*?)</div>', debris, re.S).group(1)
    assert re.sub(r"<[^>]+>", "", first).startswith("FAIL occupancy_change")


def test_the_body_stays_small_with_many_flagged_images(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    write(folder / "baseline.png", smooth_image(0, (300, 400, 3)))
    for i in range(60):
        write(folder / f"unrelated_{i:02d}_{'x' * 80}.png", smooth_image(100 + i, (300, 400, 3)))
    eml = tmp_path / "m.eml"
    assert main(["run", str(folder), "--out", str(tmp_path / "o"), "--eml", str(eml), "-q"]) == 1
    msg = parse(eml.read_bytes())
    check_message(msg)
    html = msg.get_body(("html",)).get_content()
    assert "more flagged images in the full report" in html


def test_reports_too_large_to_mail_stay_on_disk_and_are_named(tmp_path):
    """Mail servers refuse large messages: a report over the budget is named, not attached."""
    html_size = None
    config = tmp_path / "c.toml"
    eml = tmp_path / "m.eml"
    for budget in (100, 0.01):
        config.write_text(f"[email]\nmax_attachment_mb = {budget}\n", encoding="utf-8")
        out = tmp_path / f"o{budget}"
        args = ["run", str(SAMPLES), "--out", str(out), "--eml", str(eml), "--config", str(config)]
        assert main([*args, "-q"]) == 1
        msg = parse(eml.read_bytes())
        names = [a.get_filename() for a in msg.iter_attachments()]
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        if budget == 100:
            assert names == ["report.html", "report.xlsx"]
            assert "report.html, attached" in text and "report.xlsx, attached" in text
            html_size = (out / "report.html").stat().st_size
        else:
            assert names == []
            for name in ("report.html", "report.xlsx"):
                line = f"Not attached (too large for e-mail): {name}, in {out}"
                assert line in text and line in html
            # each on a line of its own, the legend after them (it ran on after the last)
            assert re.search(r"report\.xlsx, in [^<]*<br>\s*Diff maps:", html)
            assert (out / "report.xlsx").is_file()  # on disk all the same
    assert html_size and html_size > 0.01e6


class Inbox:
    """An aiosmtpd handler that keeps what arrives."""

    def __init__(self):
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.original_content))
        return "250 Message accepted for delivery"


def accept_qc(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"qc"
        and auth_data.password == b"s3cret"
    )
    return AuthResult(success=ok)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    # Controller checks readiness by connecting to its port, so it needs a real one, not 0.
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=accept_qc,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def test_the_report_arrives_whole_at_a_real_smtp_server(smtp_server, tmp_path, monkeypatch):
    inbox, port = smtp_server
    monkeypatch.setenv("REPORTER_SMTP_USER", "qc")
    monkeypatch.setenv("REPORTER_SMTP_PASSWORD", "s3cret")
    code = main(
        [
            "run",
            str(SAMPLES),
            "--out",
            str(tmp_path / "o"),
            "--email-to",
            "lab@example.org",
            "--email-to",
            "manager@example.org",
            "--email-from",
            "qc@example.org",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            str(port),
            "-q",
        ]
    )
    assert code == 1  # the verdict, not the delivery
    [(sender, recipients, data)] = inbox.messages
    assert sender == "qc@example.org"
    assert recipients == ["lab@example.org", "manager@example.org"]
    msg = parse(data)
    check_message(msg)
    attached = next(msg.iter_attachments()).get_payload(decode=True)
    assert attached == (tmp_path / "o" / "report.html").read_bytes()
    meta = (tmp_path / "o" / "results.json").read_text(encoding="utf-8")
    assert '"sent": true' in meta


def test_wrong_credentials_and_unreachable_servers_exit_3_and_keep_the_reports(
    smtp_server, tmp_path, monkeypatch, capsys
):
    inbox, port = smtp_server
    monkeypatch.setenv("REPORTER_SMTP_USER", "qc")
    monkeypatch.setenv("REPORTER_SMTP_PASSWORD", "wrong")
    config = tmp_path / "c.toml"
    config.write_text(
        "[email]\ntimeout = 3\n", encoding="utf-8"
    )  # aiosmtpd lingers after a refusal
    argv = [
        "run",
        str(SAMPLES),
        "--email-to",
        "lab@example.org",
        "--smtp-host",
        "127.0.0.1",
        "-q",
        "--config",
        str(config),
    ]
    code = main([*argv, "--out", str(tmp_path / "a"), "--smtp-port", str(port)])
    err = capsys.readouterr().err
    assert code == 3
    assert "could not send the e-mail through 127.0.0.1" in err and "Traceback" not in err
    assert not inbox.messages
    assert (tmp_path / "a" / "report.html").is_file()
    assert '"exit_code": 3' in (tmp_path / "a" / "results.json").read_text(encoding="utf-8")
    code = main([*argv, "--out", str(tmp_path / "b"), "--smtp-port", str(free_port())])
    assert code == 3
    assert "Connection refused" in capsys.readouterr().err
    assert (tmp_path / "b" / "results.csv").is_file()


class SizedInbox(Inbox):
    """A server that refuses a message over ``limit`` bytes after its DATA (552), as a
    server does that gives no SIZE in its EHLO answer."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.refused = 0

    async def handle_DATA(self, server, session, envelope):
        if len(envelope.original_content) > self.limit:
            self.refused += 1
            return "552 5.3.4 Message size exceeds fixed maximum message size"
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("told", ["SIZE", "552"])
def test_a_server_that_takes_less_than_the_reports_gets_the_message_without_them(
    tmp_path, monkeypatch, capsys, told
):
    """Postfix takes 10 MB by default, under the attachments' own budget of 15: the
    message goes without the reports that do not fit, and names them with their folder
    (absolute, as the reader is elsewhere). A server too small even for the body is
    exit status 3, with the size in the line."""
    monkeypatch.chdir(tmp_path)
    argv = ["run", str(SAMPLES), "--email-to", "lab@example.org", "--smtp-host", "127.0.0.1"]
    argv += ["--no-progress"]
    html = workbook = None
    for limit in (250_000, 20_000):
        inbox = Inbox() if told == "SIZE" else SizedInbox(limit)
        options = {"data_size_limit": limit if told == "SIZE" else None}
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **options)
        controller.start()
        out = f"o{limit}"
        try:
            code = main(
                [*argv, "--smtp-port", str(controller.port), "--out", out, "--eml", "m.eml"]
            )
        finally:
            controller.stop()
        err = capsys.readouterr().err
        meta = json.loads((tmp_path / out / "results.json").read_text(encoding="utf-8"))["email"]
        html = (tmp_path / out / "report.html").stat().st_size
        workbook = (tmp_path / out / "report.xlsx").stat().st_size
        if limit == 250_000:
            assert code == 1  # the verdict: the message went
            [(_, _, data)] = inbox.messages
            msg = parse(data)
            assert [a.get_filename() for a in msg.iter_attachments()] == ["report.xlsx"]
            line = f"Not attached (too large for e-mail): report.html, in {tmp_path / out}"
            assert line in msg.get_body(("plain",)).get_content()
            assert line in msg.get_body(("html",)).get_content()
            assert meta["sent"] is True and meta["not_attached"] == ["report.html"]
            assert "report.html not attached: too large for the server at 127.0.0.1" in err
            assert parse((tmp_path / "m.eml").read_bytes())["Message-ID"] == msg["Message-ID"]
            if told == "552":
                assert inbox.refused == 2  # both reports, then the page alone
        else:
            assert code == 3 and not inbox.messages
            assert "even without attachments: it " in err and "Traceback" not in err
            assert meta["sent"] is False and "even without attachments" in meta["error"]
            assert (tmp_path / out / "report.html").is_file()
    assert html > 250_000 > workbook  # the sizes the limits above were chosen between


class PickyInbox(Inbox):
    """A server that knows one of the two recipients (550 for the other)."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address != "lab@example.org":
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_a_recipient_the_server_refuses_is_a_failed_delivery_that_says_who_has_it(tmp_path, capsys):
    """The message reached one recipient of two: exit status 3 (someone lacks it), but
    not "could not send": the log and results.json say who has it and who was refused."""
    inbox = PickyInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    out = tmp_path / "o"
    argv = ["run", str(SAMPLES), "--out", str(out), "--smtp-host", "127.0.0.1", "-q"]
    argv += ["--email-to", "lab@example.org", "--email-to", "gone@example.org"]
    try:
        code = main([*argv, "--smtp-port", str(controller.port)])
    finally:
        controller.stop()
    err = capsys.readouterr().err
    assert code == 3
    [(_, recipients, _)] = inbox.messages
    assert recipients == ["lab@example.org"]
    said = f"the server at 127.0.0.1:{controller.port} refused gone@example.org (550 5.1.1 no"
    assert said in err and "the report went to lab@example.org only" in err
    meta = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert meta["email"]["sent"] is True and said in meta["email"]["error"]
    assert meta["exit_code"] == 3


FIXTURES = Path(__file__).parent / "fixtures"


class TlsInbox(Inbox):
    async def handle_DATA(self, server, session, envelope):
        self.tls = session.ssl is not None or server.transport.get_extra_info("sslcontext")
        return await super().handle_DATA(server, session, envelope)


def tls_server(mode: str, certificate: str = "tls-localhost.pem", **options) -> tuple:
    """A real server on loopback with TLS from the start ("ssl") or after STARTTLS, which
    it asks for before any mail ("starttls"), holding a certificate no public authority
    signed, as a lab's own server does."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(FIXTURES / certificate)
    tls = {"ssl_context": context} if mode == "ssl" else {"tls_context": context}
    if mode == "starttls":
        tls["require_starttls"] = options.pop("require_starttls", True)
    inbox = TlsInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **tls, **options)
    controller.start()
    return inbox, controller


def test_tls_with_a_labs_own_certificate_and_what_to_change_when_it_fails(
    tmp_path, monkeypatch, capsys
):
    """STARTTLS and TLS from the start reach a server whose certificate the lab signed,
    given its authority with SSL_CERT_FILE. Each way of getting it wrong is one line that
    says what to change: no STARTTLS where the server asks for it, an authority this
    machine does not know, a certificate for another name."""
    argv = ["run", str(SAMPLES), "--out", str(tmp_path / "o"), "--smtp-host", "127.0.0.1"]
    argv += ["--email-to", "lab@example.org", "-q"]

    def send(controller, *options, authority=None):
        if authority:
            monkeypatch.setenv("SSL_CERT_FILE", str(FIXTURES / authority))
        else:
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        code = main([*argv, "--smtp-port", str(controller.port), *options])
        return code, capsys.readouterr().err

    inbox, controller = tls_server("starttls", auth_require_tls=True, authenticator=accept_qc)
    try:
        code, err = send(controller)
        assert code == 3 and "set [email] starttls, or --smtp-starttls)" in err
        code, err = send(controller, "--smtp-starttls")
        assert code == 3 and "self-signed certificate" in err
        assert "give that authority's certificate with SSL_CERT_FILE=" in err
        assert not inbox.messages
        monkeypatch.setenv("REPORTER_SMTP_USER", "qc")
        monkeypatch.setenv("REPORTER_SMTP_PASSWORD", "s3cret")
        code, err = send(controller, "--smtp-starttls", authority="tls-localhost.pem")
        assert code == 1 and len(inbox.messages) == 1 and inbox.tls
        assert "unencrypted" not in err  # over TLS, and to this machine
    finally:
        controller.stop()
    # A server that offers STARTTLS without asking for it, and login only over TLS: told
    # so. A wrong password there is not taken for a want of TLS (aiosmtpd holds a failed
    # login past any timeout, so its 535 is put to the hint with the server's EHLO read).
    from reporter.config import Smtp
    from reporter.render import mail

    options = {"authenticator": accept_qc, "require_starttls": False}
    inbox, controller = tls_server("starttls", auth_require_tls=True, **options)
    try:
        code, err = send(controller)
        assert code == 3 and not inbox.messages
        assert "(the server asks for TLS first: set [email] starttls" in err
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            wrong = smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication failed")
            assert mail._hint(wrong, Smtp(host="127.0.0.1"), {"client": client}) == ""
            missing = smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
            assert "asks for TLS first" in mail._hint(missing, Smtp(), {"client": client})
    finally:
        controller.stop()
    monkeypatch.delenv("REPORTER_SMTP_USER")
    for certificate in ("tls-localhost.pem", "tls-elsewhere.pem"):
        inbox, controller = tls_server("ssl", certificate)
        try:
            code, err = send(controller, "--smtp-ssl", authority=certificate)
        finally:
            controller.stop()
        if certificate == "tls-localhost.pem":
            assert code == 1 and len(inbox.messages) == 1 and inbox.tls
        else:
            assert code == 3 and not inbox.messages and "mismatch" in err
            assert "(give --smtp-host as a name the server's certificate holds" in err
    assert "Traceback" not in err


def test_a_password_sent_unencrypted_to_another_machine_is_a_warning(
    smtp_server, monkeypatch, capsys, tmp_path
):
    """Without TLS, AUTH sends the password as base64 that anyone on the way can read.
    The server here is on loopback; the check that tells this machine from another is
    made to say "another" to show the warning, and is tried on its own."""
    from reporter.render import mail

    same = [("127.0.0.1", "127.0.0.1"), ("127.0.1.1", "127.0.0.1"), ("::1", "::1")]
    same += [("::ffff:127.0.0.1", "::ffff:127.0.0.1"), ("192.0.2.7", "192.0.2.7")]
    assert all(mail._same_machine(peer, own) for peer, own in same)
    other = [("10.0.0.5", "10.0.0.9"), ("2001:db8::1", "2001:db8::2"), ("mail", "10.0.0.9")]
    assert not any(mail._same_machine(peer, own) for peer, own in other)
    inbox, port = smtp_server
    monkeypatch.setenv("REPORTER_SMTP_USER", "qc")
    monkeypatch.setenv("REPORTER_SMTP_PASSWORD", "s3cret")
    monkeypatch.setattr(mail, "_this_machine", lambda sock: False)
    argv = ["run", str(SAMPLES), "--out", str(tmp_path / "o"), "--smtp-host", "127.0.0.1"]
    code = main([*argv, "--smtp-port", str(port), "--email-to", "lab@example.org", "-q"])
    assert code == 1 and len(inbox.messages) == 1
    said = f"WARNING the SMTP password goes to 127.0.0.1:{port} unencrypted: set [email]"
    assert said in capsys.readouterr().err


def _own_names() -> list[str]:
    """This machine's own name, and its own address on the way out where it has a route
    (a UDP socket's connect sends nothing)."""
    names = [socket.gethostname()]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            names.append(probe.getsockname()[0])
        except OSError:  # no route out: the name alone
            pass
    return names


def test_a_password_to_this_machine_by_its_own_name_or_address_is_no_warning(
    monkeypatch, capsys, tmp_path
):
    """A relay on this machine reached by its host name (Debian's resolves to 127.0.1.1)
    or by its own network address: the password never leaves the machine. The address
    connected to tells, not the name given."""
    monkeypatch.setenv("REPORTER_SMTP_USER", "qc")
    monkeypatch.setenv("REPORTER_SMTP_PASSWORD", "s3cret")
    for n, host in enumerate(dict.fromkeys(_own_names())):
        address = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
        inbox = Inbox()
        controller = Controller(
            inbox,
            hostname=address,
            port=free_port(),
            authenticator=accept_qc,
            auth_require_tls=False,
        )
        controller.start()
        try:
            argv = ["run", str(SAMPLES), "--out", str(tmp_path / f"o{n}"), "--smtp-host", host]
            argv += ["--smtp-port", str(controller.port), "--email-to", "lab@example.org", "-q"]
            assert main(argv) == 1 and len(inbox.messages) == 1, host
        finally:
            controller.stop()
        assert "unencrypted" not in capsys.readouterr().err, host


def test_an_eml_that_cannot_be_written_stops_the_run_before_anything_is_sent(
    smtp_server, tmp_path, capsys
):
    """The message says where the reports are; a run that then stops on its --eml file
    leaves none there. So the file is written first, and the message is not sent."""
    inbox, port = smtp_server
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    argv = ["run", str(SAMPLES), "--out", str(tmp_path / "o"), "--smtp-host", "127.0.0.1"]
    argv += ["--smtp-port", str(port), "--email-to", "lab@example.org", "-q"]
    code = main([*argv, "--eml", str(tmp_path / "file" / "m.eml")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write" in err and "Traceback" not in err
    assert not inbox.messages and not (tmp_path / "o" / "report.html").exists()


def test_no_password_option_on_the_command_line(capsys):
    assert main(["run", "x", "--smtp-password", "p"]) == 2
    assert "unrecognized arguments: --smtp-password" in capsys.readouterr().err


def test_email_settings_from_the_config_file(tmp_path, run_dir):
    from reporter.config import load_toml
    from reporter.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text(
        '[email]\nto = ["lab@example.org"]\nsmtp_host = "mail"\nstarttls = true\n'
        'user = "qc"\npassword = "pw"\n',
        encoding="utf-8",
    )
    config = load_toml(path)
    assert config.email.to == ("lab@example.org",) and config.email.smtp.effective_port() == 587
    assert config.email.smtp.user == "qc"
    path.write_text('[email]\nto = ["not an address"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not an e-mail address"):
        load_toml(path)
    path.write_text("[email]\nssl = true\nstarttls = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not both"):
        load_toml(path)


def test_a_bad_attachment_budget_is_a_config_error(tmp_path):
    from reporter.config import load_toml
    from reporter.errors import ConfigError

    path = tmp_path / "c.toml"
    for value in ("-1", '"lots"'):
        path.write_text(f"[email]\nmax_attachment_mb = {value}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="max_attachment_mb"):
            load_toml(path)
    path.write_text("[email]\nmax_attachment_mb = 0\n", encoding="utf-8")  # attach nothing
    assert load_toml(path).email.max_attachment_mb == 0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--email-from", "qc@x.org\r\nBcc: evil@x.org", "is not a sender"),
        ("--email-from", "qc@x.org\nX: y", "is not a sender"),
        ("--series", "FSC\r\nBcc: evil@x.org", "a series name is one line"),
    ],
)
def test_a_line_break_in_a_mail_header_value_is_one_line_and_status_2(
    tmp_path, capsys, option, value, message
):
    eml = tmp_path / "qc.eml"
    out = tmp_path / "o"
    code = main(["run", str(SAMPLES), "--out", str(out), "--eml", str(eml), option, value, "-q"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not eml.exists() and not (out / "results.csv").exists()  # stopped before any work


@pytest.fixture
def trickling_server():
    """A real server on loopback that sends its greeting one byte every 0.4 s (for at
    most 30 s, then it stops by itself): every read answers within smtplib's timeout,
    and the greeting never ends."""
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(30)
    stop = threading.Event()

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            end = time.monotonic() + 30
            for byte in b"220-" + b"x" * 1000:
                if stop.is_set() or time.monotonic() > end:
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.4)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_a_server_that_trickles_cannot_hold_the_run(trickling_server, tmp_path, capsys):
    """[email] timeout is a deadline for the whole delivery: exit 3 within it."""
    import time

    config = tmp_path / "c.toml"
    config.write_text("[email]\ntimeout = 2\n", encoding="utf-8")
    started = time.monotonic()
    code = main(
        [
            "run",
            str(SAMPLES),
            "--out",
            str(tmp_path / "o"),
            "--email-to",
            "lab@example.org",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            str(trickling_server),
            "--config",
            str(config),
            "-q",
        ]
    )
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 3 and "did not finish within 2 s" in err and "Traceback" not in err
    assert took < 15  # the comparison, the reports and the 2 s deadline; not 30 s or more
    assert (tmp_path / "o" / "report.html").is_file()
