"""The one email-address parser, as phones.py is the one phone parser."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

EMAIL_HINT = "use an address such as ann@example.com"


def email_address(text: str) -> str | None:
    """The address normalised (domain lower-cased and in ASCII/IDNA form), or None when it is
    not one. Syntax only: whether the mailbox exists is the mail server's answer, not a DNS
    lookup at intake. A non-ASCII local part (zoë@…) needs SMTPUTF8, which many relays lack:
    refused here rather than bounced later."""
    try:
        valid = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return valid.ascii_email or valid.normalized
