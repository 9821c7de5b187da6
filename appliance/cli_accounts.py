"""`minipacs user ...` and `minipacs token ...`: who may use the web side, and systems' tokens.

Passwords are never taken on the command line (other users of the machine
can read it in `ps`): they are asked for twice on a terminal, or read from
the first line of standard input with --password-stdin (for scripts).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

from appliance.services import run_on_archive
from appliance.settings import Settings
from appliance.tables import local_time, print_table

Command = Callable[[argparse.Namespace, Settings], int]

# Spelled out here so `minipacs --help` does not import the archive (0.8 s);
# archive.accounts checks the values, and a test keeps these lists equal to its.
USER_ROLES = ("admin", "radiologist", "technologist", "referrer")
TOKEN_ROLES = ("emr", "his", *USER_ROLES)
MIN_PASSWORD = 8


class AccountError(Exception):
    """A failure to report in one line (the CLI prints it as `minipacs: ...`)."""


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `user` and `token` commands to the `minipacs` parser."""
    user = sub.add_parser("user", help="manage the people who log in to the web side",
                          description="User accounts for the web side (viewer, reports, DICOMweb). "
                          f"Roles: {', '.join(USER_ROLES)}.")  # fmt: skip
    user_sub = user.add_subparsers(title="actions", metavar="ACTION")
    password = argparse.ArgumentParser(add_help=False)
    password.add_argument("--password-stdin", action="store_true",
                          help="read the password from the first line of standard input "
                          "(default: ask twice on the terminal)")  # fmt: skip
    add = user_sub.add_parser("add", parents=[common, password], help="create a user",
                              description=f"Create a user. The password needs at least {MIN_PASSWORD} "
                              "characters; a few words are easier to remember than symbols.")  # fmt: skip
    add.add_argument("username", metavar="NAME", help="login name: a-z, 0-9, '.', '_', '-' (e.g. bs.lan)")
    add.add_argument("--role", required=True, choices=USER_ROLES, help="what the user may do")
    add.add_argument("--display-name", default="", metavar="TEXT", help="e.g. 'BS. Trần Thị Lan'")
    add.add_argument("--certificate-number", default="", metavar="NUMBER",
                     help="practising-certificate number (số chứng chỉ hành nghề) of a radiologist: "
                     "the claim's MA_BS_DOC_KQ for the reports they sign")  # fmt: skip
    add.set_defaults(func=cmd_user_add)
    cert = user_sub.add_parser("certificate-number", parents=[common],
                               help="set a user's practising-certificate number (MA_BS_DOC_KQ)",
                               description="Set (or, with \"\", clear) the practising-certificate number "
                               "(số chứng chỉ hành nghề) a radiologist's signed reports carry on the "
                               "health-insurance claim (MA_BS_DOC_KQ). Reports already signed keep the "
                               "number they were signed with.")  # fmt: skip
    cert.add_argument("username", metavar="NAME")
    cert.add_argument("number", metavar="NUMBER", help="e.g. 003421/HCM-CCHN")
    cert.set_defaults(func=cmd_user_certificate_number)
    passwd = user_sub.add_parser("passwd", parents=[common, password], help="set a user's password",
                                 description="Set a new password for a user.")  # fmt: skip
    passwd.add_argument("username", metavar="NAME")
    passwd.set_defaults(func=cmd_user_passwd)
    lst = user_sub.add_parser("list", parents=[common], help="list users",
                              description="List the users, their roles and whether they are disabled.")  # fmt: skip
    lst.set_defaults(func=cmd_user_list)
    for action, disabled, text in (("disable", True, "stop a user from logging in (kept for the audit log)"),
                                   ("enable", False, "let a disabled user log in again")):  # fmt: skip
        p = user_sub.add_parser(action, parents=[common], help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("username", metavar="NAME")
        p.set_defaults(func=_cmd_user_disable(disabled))
    from appliance.cli_reports import add_user_parsers  # `user signing-key` lives with the reports' commands

    add_user_parsers(user_sub, common)
    user.set_defaults(func=None, help_parser=user)

    token = sub.add_parser("token", help="manage bearer tokens for systems (EMR, scripts)",
                           description="Bearer tokens let a system (the EMR, a script) use the "
                           "HTTP side without a person's password.")  # fmt: skip
    token_sub = token.add_subparsers(title="actions", metavar="ACTION")
    create = token_sub.add_parser("create", parents=[common], help="create a token and print it once",
                                  description="Create a token. It is printed once: store it in the "
                                  "system that will use it; minipacs keeps only a hash.")  # fmt: skip
    create.add_argument("name", metavar="NAME", help="what uses it, e.g. his-emr")
    create.add_argument("--role", default="emr", choices=TOKEN_ROLES,
                        help="what it may do: emr reads images (the default), his places orders "
                        "(/api/orders, /fhir), or a person's role")  # fmt: skip
    create.set_defaults(func=cmd_token_create)
    revoke = token_sub.add_parser("revoke", parents=[common], help="revoke a token at once",
                                  description="Revoke a token: it stops working at once.")  # fmt: skip
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(func=cmd_token_revoke)
    tlist = token_sub.add_parser("list", parents=[common], help="list tokens",
                                 description="List the tokens (never their secrets).")  # fmt: skip
    tlist.set_defaults(func=cmd_token_list)
    token.set_defaults(func=None, help_parser=token)


def cli_origin() -> Any:
    """Who is acting, for the audit log: the operating-system user at the console."""
    from archive import Origin

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = str(os.getuid())
    return Origin(f"cli:{who}", "", "CLI")


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password(args.password_stdin)
    def add(archive: Any) -> Any:
        made = archive.accounts.add_user(args.username, args.role, password, cli_origin(),
                                         display_name=args.display_name)  # fmt: skip
        if args.certificate_number:
            archive.accounts.set_practising_certificate(made.username, args.certificate_number, cli_origin())
        return made

    user = _run(settings, add)
    print(f"created user {user.username} ({user.role})")
    return 0


def cmd_user_certificate_number(args: argparse.Namespace, settings: Settings) -> int:
    _run(settings, lambda a: a.accounts.set_practising_certificate(args.username, args.number, cli_origin()))
    shown = args.number.strip() or "(none)"
    print(f"practising-certificate number of {args.username.strip().lower()}: {shown}")
    return 0


def cmd_user_passwd(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password(args.password_stdin)
    _run(settings, lambda a: a.accounts.set_password(args.username, password, cli_origin()))
    print(f"password of {args.username.strip().lower()} changed")
    return 0


def _cmd_user_disable(disabled: bool) -> Command:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        _run(settings, lambda a: a.accounts.set_disabled(args.username, disabled, cli_origin()))
        print(f"user {args.username.strip().lower()} {'disabled' if disabled else 'enabled'}")
        return 0

    return command


def cmd_user_list(args: argparse.Namespace, settings: Settings) -> int:
    users = _run(settings, lambda a: a.accounts.users())
    print_table(
        "no users yet (create the first administrator with: minipacs user add admin --role admin)",
        [("USER", 20), ("ROLE", 12), ("STATE", 8), ("PASSWORD SET", 19), ("CCHN", 18), ("NAME", 0)],
        [(u.username, u.role, "disabled" if u.disabled else "active", local_time(u.password_changed_at),
          u.practising_certificate or "-", u.display_name) for u in users],
    )  # fmt: skip
    return 0


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    new = _run(settings, lambda a: a.accounts.create_token(args.name, cli_origin(), role=args.role))
    print(f"created token {new.token.name} ({new.token.role}). Store it now; it is not shown again:")
    print(new.secret)
    return 0


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    _run(settings, lambda a: a.accounts.revoke_token(args.name, cli_origin()))
    print(f"token {args.name.strip()} revoked")
    return 0


def cmd_token_list(args: argparse.Namespace, settings: Settings) -> int:
    tokens = _run(settings, lambda a: a.accounts.tokens())
    print_table(
        "no tokens (create one with: minipacs token create NAME)",
        [("TOKEN", 20), ("ROLE", 12), ("STARTS WITH", 12), ("STATE", 7), ("CREATED", 19), ("LAST USED", 0)],
        [(t.name, t.role, t.prefix, "active" if t.active else "revoked", local_time(t.created_at),
          local_time(t.last_used_at) if t.last_used_at else "never") for t in tokens],
    )  # fmt: skip
    return 0


def _run(settings: Settings, action: Callable[[Any], Any]) -> Any:
    return run_on_archive(settings, action, AccountError)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise AccountError("--password-stdin: nothing on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise AccountError("no terminal to ask for the password: use --password-stdin (one line on standard input)")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise AccountError("the two passwords differ; nothing was changed")
    return first
