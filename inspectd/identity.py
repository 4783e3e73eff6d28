"""Who is working: the person a decision or a model change is signed with, and their roles.

People and roles are configured in ``[review]`` (``operators``, ``unlisted_roles``).
The review app asks who is working (see ``gui/identity.py``); the command line signs
with ``--by NAME`` or the login name.
"""

from __future__ import annotations

import argparse
import getpass
import os

from .config import ROLE_QUALITY_ENGINEER, Config, Person
from .errors import InspectdError


class RoleError(InspectdError):
    """Someone tried something their role does not allow."""


ROLE_NAMES = {"operator": "operator", "quality_engineer": "quality engineer"}


def os_user() -> str:
    """The login name, else $USER, else "operator" (containers may have no passwd entry)."""
    try:
        return getpass.getuser() or "operator"
    except (KeyError, OSError):
        return os.environ.get("USER", "operator") or "operator"


def cli_person(config: Config, by: str | None) -> Person:
    """The person a command-line change is signed with: ``--by`` or the login name.

    When people are listed in the configuration, the name must be one of them (or a
    badge id) and carries that person's roles.  With nobody listed, whoever has a
    shell on the machine is trusted as a quality engineer (a fresh install).
    """
    name = (by or os_user()).strip()
    if not config.review.operators:
        return Person(name, roles=("quality_engineer",))
    person = config.review.person(name)
    if person is None:
        listed = ", ".join(p.name for p in config.review.operators)
        raise RoleError(f"{name!r} is not listed in [review] operators of the configuration ({listed}); "
                        "sign with --by NAME")
    return person


def require_role(person: Person, role: str, action: str) -> None:
    """Raise RoleError unless *person* may act in *role*."""
    if not person.may(role):
        raise RoleError(f"{person.name} may not {action}: that needs the {ROLE_NAMES.get(role, role)} role "
                        "([review] operators in config.toml)")


def add_signer_option(parser: argparse.ArgumentParser, does: str) -> None:
    """``--by NAME`` for a command that changes a product's good set or active model."""
    parser.add_argument("--by", metavar="NAME", help=f"who {does} (default: the login name); with people listed in "
                        "[review] operators, the name or badge id of one with the quality_engineer role")


def quality_engineer(config: Config, by: str | None, action: str) -> Person:
    """The person a command-line model change is signed with; RoleError unless they may."""
    person = cli_person(config, by)
    require_role(person, ROLE_QUALITY_ENGINEER, action)
    return person
