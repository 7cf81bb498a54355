"""API tokens: bearer secrets stored only as SHA-256 hashes, each bound to a role and a scope.

A token reads `skc_<id>_<secret>`: the id names it in listings and revocations, the secret
(32 random bytes) is shown once at creation. A 256-bit random secret needs no slow hash;
SHA-256 makes a stolen table useless without making every request pay for bcrypt.

Scopes: institution staff are bound to one institution; a candidate to one ID number, kept as
its keyed ref (never the number); the provincial centre, the HR department and auditors span
every institution.

Every token expires (SKILLCERT_TOKEN_DAYS, 90 by default). Rotating one revokes it and makes a
new one for the same holder, role and scope, in one transaction; the holder keeps their principal
id, which stays the same across rotations.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from domain.errors import InvalidInput
from domain.model import Actor, Role
from domain.text import normalise, problem
from infra.store.eventstore import serialise_ddl

ROLES = (Role.INSTITUTION_STAFF, Role.PROVINCIAL_CENTRE, Role.HR_DEPARTMENT, Role.AUDITOR, Role.CANDIDATE)
PREFIX = "skc_"

DDL = """CREATE TABLE IF NOT EXISTS {} (
    id text PRIMARY KEY,
    secret_sha256 bytea NOT NULL UNIQUE,
    name text NOT NULL,
    role text NOT NULL,
    institution_id uuid,
    candidate_ref text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    expires_at timestamptz,
    principal_id text,
    CHECK ((role = 'institution_staff') = (institution_id IS NOT NULL)),
    CHECK ((role = 'candidate') = (candidate_ref IS NOT NULL))
)"""


DEFAULT_DAYS = 90
UPGRADE = [  # tables made before tokens expired: the older tokens get the default life from their creation
    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS expires_at timestamptz",
    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS principal_id text",
    "UPDATE {} SET expires_at = created_at + interval '90 days' WHERE expires_at IS NULL",
    "UPDATE {} SET principal_id = 'p_' || id WHERE principal_id IS NULL",
]


class Refused(Exception):
    """Why a token opens nothing: unknown, revoked or expired (the message says which, and when)."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the token's holder, its role and its scope."""

    token_id: str
    name: str
    role: Role
    institution_id: UUID | None = None
    candidate_ref: str | None = None

    def actor(self, request_id: str | None = None) -> Actor:
        # The event's actor comes from here and nowhere else: never from a request body.
        extra = {"request_id": request_id} if request_id else {}
        return Actor(id=self.name, role=self.role, institution_id=self.institution_id, **extra)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    def __init__(self, database_url: str, schema: str) -> None:
        self.url = database_url
        self.table = sql.Identifier(schema, "api_tokens")

    def create_table(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            serialise_ddl(conn)
            conn.execute(sql.SQL(DDL).format(self.table))
            for statement in UPGRADE:
                conn.execute(sql.SQL(statement).format(self.table))

    def create(
        self,
        name: str,
        role: Role,
        institution_id: UUID | None = None,
        candidate_ref: str | None = None,
        days: int = DEFAULT_DAYS,
        principal_id: str | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> tuple[str, str]:
        """A new token: returns (id, the token itself). Only its hash is kept."""
        problems = []
        if not name.strip() or len(name) > 100:
            problems.append(("name", "name the holder (1-100 characters): it becomes the actor on their events"))
        elif why := problem(name):
            problems.append(("name", why))
        if role not in ROLES:
            problems.append(("role", f"tokens are for {', '.join(r.value for r in ROLES)}, not {role.value}"))
        if (role is Role.INSTITUTION_STAFF) != (institution_id is not None):
            problems.append(("institution_id", "institution staff tokens, and only they, name an institution"))
        if (role is Role.CANDIDATE) != (candidate_ref is not None):
            problems.append(("id_number", "candidate tokens, and only they, name the candidate's ID number"))
        if not 1 <= days <= 3650:
            problems.append(("days", f"a token lives 1 to 3650 days, not {days}"))
        if problems:
            raise InvalidInput(problems)
        token_id = secrets.token_hex(4)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        insert = sql.SQL("INSERT INTO {} (id, secret_sha256, name, role, institution_id, candidate_ref, expires_at,"
                         " principal_id) VALUES (%s, %s, %s, %s, %s, %s, now() + %s, %s)").format(self.table)  # fmt: skip
        values = (token_id, _hash(token), normalise(name.strip()), role.value, institution_id, candidate_ref,
                  timedelta(days=days), principal_id or f"p_{secrets.token_hex(6)}")  # fmt: skip
        if conn is not None:
            conn.execute(insert, values)
        else:
            with psycopg.connect(self.url, autocommit=True) as c:
                c.execute(insert, values)
        return token_id, token

    def rotate(self, token_id: str, days: int = DEFAULT_DAYS) -> tuple[str, str]:
        """Revoke a token and make its successor for the same holder, role and scope (and principal id),
        in one transaction. Works for an expired token too: that is when it is needed."""
        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            row = conn.execute(
                sql.SQL("UPDATE {} SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL"
                        " RETURNING name, role, institution_id, candidate_ref, principal_id").format(self.table),
                (token_id,),
            ).fetchone()  # fmt: skip
            if row is None:
                raise InvalidInput([("token_id", f"no token {token_id} that is not revoked")])
            name, role, institution_id, candidate_ref, principal_id = row
            return self.create(name, Role(role), institution_id, candidate_ref, days, principal_id, conn)

    def revoke(self, token_id: str) -> bool:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(
                sql.SQL("UPDATE {} SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL").format(self.table),
                (token_id,),
            )
            return cur.rowcount == 1

    def list(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            return conn.execute(
                sql.SQL("SELECT id, name, role, institution_id, candidate_ref IS NOT NULL AS bound_to_candidate,"
                        " created_at, revoked_at, expires_at, principal_id FROM {} ORDER BY created_at")
                .format(self.table)
            ).fetchall()  # fmt: skip

    def principal(self, conn: psycopg.Connection[Any], token: str) -> Principal:
        """The holder of a live token; Refused, saying why, for an unknown, revoked or expired one."""
        if not token.startswith(PREFIX):
            raise Refused("the API token is unknown (tokens begin skc_)")
        row = conn.execute(
            sql.SQL("SELECT id, name, role, institution_id, candidate_ref, revoked_at, expires_at, now() FROM {}"
                    " WHERE secret_sha256 = %s").format(self.table),
            (_hash(token),),
        ).fetchone()  # fmt: skip
        if row is None:
            raise Refused("the API token is unknown")
        token_id, name, role, institution_id, candidate_ref, revoked_at, expires_at, now = row
        if revoked_at is not None:
            raise Refused(f"the API token {token_id} was revoked on {_day(revoked_at)}")
        if expires_at is not None and expires_at <= now:
            raise Refused(f"the API token {token_id} expired on {_day(expires_at)}; its holder needs a new one "
                          f"(skillcert tokens rotate {token_id})")  # fmt: skip
        return Principal(token_id, name, Role(role), institution_id, candidate_ref)


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
