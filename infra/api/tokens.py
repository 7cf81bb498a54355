"""Principals and their API tokens: who acts, and the bearer secrets they act with.

A principal is a person or system that acts: a stable, pseudonymous id (p_…) with a name, a role and a
scope. Every event names its principal id as the actor, never a name, so the bus and the store carry
no names of staff; auditors resolve an id to its name and role (GET /principals/{id}).

A token reads `skc_<id>_<secret>`: the id names it in listings and revocations, the secret (32 random
bytes) is shown once at creation. A 256-bit random secret needs no slow hash; SHA-256 makes a stolen
table useless without making every request pay for bcrypt. Every token expires
(SKILLCERT_TOKEN_DAYS, 90 by default). Rotating one revokes it and makes a new one for the same
principal, in one transaction.

Scopes: institution staff are bound to one institution; a candidate to one ID number, kept as its
keyed ref (never the number); the provincial centre, the HR department and auditors span every
institution. Names are unique among principals with a live token, so "who" is never ambiguous.
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

from domain.errors import InvalidInput, NotFound
from domain.institution import CITY_CODES
from domain.model import Actor, Role
from domain.text import normalise, problem
from infra.store.eventstore import serialise_ddl

ROLES = (Role.INSTITUTION_STAFF, Role.PROVINCIAL_CENTRE, Role.HR_DEPARTMENT, Role.ASSOCIATION, Role.AUDITOR,
         Role.CANDIDATE)  # fmt: skip
# Who acts for a region: an HR department always (the one where institutions are filed), a skills
# centre when it is a city's (属地管理); the provincial centre acts for all ("00" or none).
REGIONAL = (Role.HR_DEPARTMENT, Role.PROVINCIAL_CENTRE)
PREFIX = "skc_"
DEFAULT_DAYS = 90
NAME_LOCKS = 0x736B746E  # "sktn": the first key of a name's lock while a token is made for it (Tokens.create)

DDL = """
CREATE TABLE IF NOT EXISTS {principals} (
    principal_id text PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL,
    institution_id uuid,
    candidate_ref text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {tokens} (
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
);
-- Tables made before tokens expired and named principals: older tokens get the default life from
-- their creation, and a principal each.
ALTER TABLE {tokens} ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE {tokens} ADD COLUMN IF NOT EXISTS principal_id text;
-- The region an HR department (or a city's skills centre) acts for: 004 table 2's city code.
ALTER TABLE {principals} ADD COLUMN IF NOT EXISTS jurisdiction text;
UPDATE {tokens} SET expires_at = created_at + interval '90 days' WHERE expires_at IS NULL;
UPDATE {tokens} SET principal_id = 'p_' || id WHERE principal_id IS NULL;
-- Every token ends: one without an end would open the API for ever.
ALTER TABLE {tokens} ALTER COLUMN expires_at SET NOT NULL;
INSERT INTO {principals} (principal_id, name, role, institution_id, candidate_ref, created_at)
    SELECT DISTINCT ON (principal_id) principal_id, name, role, institution_id, candidate_ref, created_at
    FROM {tokens} ORDER BY principal_id, created_at ON CONFLICT DO NOTHING;
"""


class Refused(Exception):
    """Why a token opens nothing: unknown, revoked or expired (the message says which, and when)."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the token's principal, its role and its scope."""

    token_id: str
    name: str
    role: Role
    institution_id: UUID | None = None
    candidate_ref: str | None = None
    principal_id: str = ""
    jurisdiction: str | None = None  # an HR department's (or a city skills centre's) filing region
    # The institutions filed in that region (from the catalogue), for narrowing what it reads.
    institutions: frozenset[str] | None = None

    def actor(self, request_id: str | None = None) -> Actor:
        # The event's actor comes from here and nowhere else: never from a request body. It is the
        # principal's id, not its name: the bus and the store carry no staff names.
        extra = {"request_id": request_id} if request_id else {}
        return Actor(id=self.principal_id, role=self.role, institution_id=self.institution_id,
                     jurisdiction=self.jurisdiction, **extra)  # fmt: skip

    @property
    def regional(self) -> bool:
        """Reads narrowed to the institutions filed in its region."""
        return self.role in REGIONAL and self.jurisdiction not in (None, "00")


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_principal_id() -> str:
    return f"p_{secrets.token_hex(6)}"


class Tokens:
    def __init__(self, database_url: str, schema: str) -> None:
        self.url = database_url
        self.table = sql.Identifier(schema, "api_tokens")
        self.principals = sql.Identifier(schema, "principals")

    def create_table(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            serialise_ddl(conn)
            conn.execute(sql.SQL(DDL).format(tokens=self.table, principals=self.principals))

    def register(
        self,
        name: str,
        role: Role,
        institution_id: UUID | None = None,
        candidate_ref: str | None = None,
        principal_id: str | None = None,
        conn: psycopg.Connection[Any] | None = None,
        jurisdiction: str | None = None,
    ) -> str:
        """A principal (idempotent for a given id): who can then be given tokens, or named as the
        actor of events made without one (the sample scenario's proctor)."""
        problems = []
        if not name.strip() or len(name) > 100:
            problems.append(("name", "name the holder (1-100 characters)"))
        elif why := problem(name):
            problems.append(("name", why))
        if role not in ROLES:
            problems.append(("role", f"tokens are for {', '.join(r.value for r in ROLES)}, not {role.value}"))
        if (role is Role.INSTITUTION_STAFF) != (institution_id is not None):
            problems.append(("institution_id", "institution staff tokens, and only they, name an institution"))
        if (role is Role.CANDIDATE) != (candidate_ref is not None):
            problems.append(("id_number", "candidate tokens, and only they, name the candidate's ID number"))
        if role is Role.HR_DEPARTMENT and jurisdiction is None:
            problems.append(("jurisdiction", "an HR department acts for the region where institutions are filed: give "
                                             "its city code (004 table 2; 00 for the province)"))  # fmt: skip
        if jurisdiction is not None and (role not in REGIONAL or jurisdiction not in CITY_CODES):
            problems.append(("jurisdiction", f"a city code of 004 table 2 ({', '.join(CITY_CODES)}), for HR "
                                             "departments and skills centres only"))  # fmt: skip
        if problems:
            raise InvalidInput(problems)
        principal_id = principal_id or new_principal_id()
        insert = sql.SQL("INSERT INTO {} (principal_id, name, role, institution_id, candidate_ref, jurisdiction)"
                         " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING").format(self.principals)  # fmt: skip
        values = (principal_id, normalise(name.strip()), role.value, institution_id, candidate_ref, jurisdiction)
        if conn is not None:
            conn.execute(insert, values)
        else:
            with psycopg.connect(self.url, autocommit=True) as c:
                c.execute(insert, values)
        return principal_id

    def create(
        self,
        name: str,
        role: Role,
        institution_id: UUID | None = None,
        candidate_ref: str | None = None,
        days: int = DEFAULT_DAYS,
        principal_id: str | None = None,
        jurisdiction: str | None = None,
    ) -> tuple[str, str]:
        """A new token for a new principal, or for `principal_id` (registered if it is not yet).
        Returns (token id, the token itself); only its hash is kept."""
        if not 1 <= days <= 3650:
            raise InvalidInput([("days", f"a token lives 1 to 3650 days, not {days}")])
        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            # One holder of a name at a time: two creations at once each found no live token named so, and both
            # made one. Held until the commit, after which the second finds the first's token.
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (NAME_LOCKS, normalise(name.strip())))
            clash = conn.execute(
                sql.SQL("SELECT principal_id FROM {} WHERE name = %s AND revoked_at IS NULL AND expires_at > now()"
                        " AND principal_id IS DISTINCT FROM %s LIMIT 1").format(self.table),
                (normalise(name.strip()), principal_id),
            ).fetchone()  # fmt: skip
            if clash:
                raise InvalidInput([("name", f"a live token already names {name.strip()!r} (principal {clash[0]}): "
                                             "give this holder another name, or rotate that token")])  # fmt: skip
            principal_id = self.register(name, role, institution_id, candidate_ref, principal_id, conn, jurisdiction)
            return self._token(conn, principal_id, days)

    def _token(self, conn: psycopg.Connection[Any], principal_id: str, days: int) -> tuple[str, str]:
        row = conn.execute(
            sql.SQL("SELECT name, role, institution_id, candidate_ref FROM {} WHERE principal_id = %s").format(
                self.principals
            ),
            (principal_id,),
        ).fetchone()
        token_id = secrets.token_hex(4)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        conn.execute(
            sql.SQL("INSERT INTO {} (id, secret_sha256, name, role, institution_id, candidate_ref, expires_at,"
                    " principal_id) VALUES (%s, %s, %s, %s, %s, %s, now() + %s, %s)").format(self.table),
            (token_id, _hash(token), *row, timedelta(days=days), principal_id),
        )  # fmt: skip
        return token_id, token

    def rotate(self, token_id: str, days: int = DEFAULT_DAYS) -> tuple[str, str]:
        """Revoke a token and make its successor for the same principal, in one transaction. Works
        for an expired token too: that is when it is needed."""
        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            row = conn.execute(
                sql.SQL("UPDATE {} SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING principal_id")
                .format(self.table),
                (token_id,),
            ).fetchone()  # fmt: skip
            if row is None:
                raise InvalidInput([("token_id", f"no token {token_id} that is not revoked")])
            return self._token(conn, row[0], days)

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

    def who(self, conn: psycopg.Connection[Any], principal_id: str) -> dict[str, Any]:
        """For auditors: a principal's name, role and scope, and its tokens' lives."""
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT principal_id, name, role, institution_id, created_at FROM {} WHERE principal_id = %s")
                .format(self.principals),
                (principal_id,),
            )  # fmt: skip
            found = cur.fetchone()
            if found is None:
                raise NotFound(f"no principal {principal_id}", field="principal_id")
            cur.execute(
                sql.SQL("SELECT id AS token_id, created_at, expires_at, revoked_at FROM {} WHERE principal_id = %s"
                        " ORDER BY created_at").format(self.table),
                (principal_id,),
            )  # fmt: skip
            return {**found, "tokens": cur.fetchall()}

    def everyone(self, conn: psycopg.Connection[Any], name: str | None, role: str | None) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT principal_id, name, role, institution_id, created_at FROM {} WHERE"
                        " (%s::text IS NULL OR name = %s) AND (%s::text IS NULL OR role = %s) ORDER BY created_at")
                .format(self.principals),
                (name, name, role, role),
            )  # fmt: skip
            return cur.fetchall()

    def principal(self, conn: psycopg.Connection[Any], token: str) -> Principal:
        """The holder of a live token; Refused, saying why, for an unknown, revoked or expired one."""
        if not token.startswith(PREFIX):
            raise Refused("the API token is unknown (tokens begin skc_)")
        row = conn.execute(
            sql.SQL("SELECT t.id, t.name, t.role, t.institution_id, t.candidate_ref, t.revoked_at, t.expires_at, now(),"
                    " t.principal_id, p.jurisdiction FROM {} t LEFT JOIN {} p USING (principal_id)"
                    " WHERE t.secret_sha256 = %s").format(self.table, self.principals),
            (_hash(token),),
        ).fetchone()  # fmt: skip
        if row is None:
            raise Refused("the API token is unknown")
        token_id, name, role, institution_id, candidate_ref, revoked_at, expires_at, now, principal_id, region = row
        if revoked_at is not None:
            raise Refused(f"the API token {token_id} was revoked on {_day(revoked_at)}")
        if expires_at <= now:
            raise Refused(f"the API token {token_id} expired on {_day(expires_at)}; its holder needs a new one "
                          f"(skillcert tokens rotate {token_id})")  # fmt: skip
        return Principal(token_id, name, Role(role), institution_id, candidate_ref, principal_id, region)


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
