"""What the development mail sink received (`make mail`): ``list``, ``show N``, ``json``.

aiosmtpd's Mailbox handler stores each message as a file of the Maildir ``$MAILDIR``; this reads
them back with the standard library, oldest first, numbered from 1.
"""

from __future__ import annotations

import argparse
import json
import mailbox
import os
import sys
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

MAILDIR = os.environ.get("MAILDIR", "/var/mail/wharf")


def messages() -> list[EmailMessage]:
    box = mailbox.Maildir(MAILDIR, factory=None, create=False)
    # Maildir names start with the delivery time (seconds, then microseconds): sorted, oldest first.
    parser = BytesParser(policy=policy.default)
    return [parser.parsebytes(box.get_bytes(key)) for key in sorted(box.iterkeys())]  # type: ignore[misc]


def body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    return part.get_content() if part is not None else None


def as_json(message: EmailMessage) -> dict[str, object]:
    return {
        "date": message["Date"],
        "from": message["From"],
        "to": message["To"],
        "subject": message["Subject"],
        "text": body(message, "plain"),
        "html": body(message, "html"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="one line per message: number, date, recipient, subject")
    show = commands.add_parser("show", help="one message's headers and plain-text body")
    show.add_argument("number", type=int, help="as `list` numbers them; negative counts from the newest")
    commands.add_parser("json", help="every message as a JSON array (the integration tests read this)")
    args = parser.parse_args()

    found = messages()
    if args.command == "json":
        json.dump([as_json(m) for m in found], sys.stdout)
    elif args.command == "list":
        if not found:
            print("no mail yet")
        for number, message in enumerate(found, 1):
            print(f"{number:>4}  {message['Date']}  {message['To']}  {message['Subject']}")
    else:
        index = args.number - 1 if args.number > 0 else args.number
        try:
            message = found[index]
        except IndexError:
            sys.exit(f"no message {args.number} ({len(found)} in the sink)")
        for name in ("Date", "From", "To", "Subject"):
            print(f"{name}: {message[name]}")
        print()
        print(body(message, "plain") or "(no plain-text body)")


if __name__ == "__main__":
    main()
