"""Registration ids (and the sitting and certificate ids made from them) come from ID numbers through a
keyed function: without the installation's secret, no id leads back to a number."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
import pytest

from domain.registration import IdType, registration_key
from infra.store.eventstore import SkillcertApplication
from infra.store.secrets import StoreTooOld
from tests.builders import candidate, setup_plan, working_years_form


def test_registration_ids_are_keyed_and_still_collide_for_the_same_candidate(service) -> None:
    _, pid, code = setup_plan(service)
    form = working_years_form(1)
    rid = service.register(candidate(1), code, form)
    assert rid == registration_key(pid, IdType.RESIDENT_ID, form.id_number, service.id_key)
    assert rid != registration_key(pid, IdType.RESIDENT_ID, form.id_number, bytes(32))  # another key, another id
    # The standard unkeyed derivation this store used to use gives something else.
    unkeyed = uuid.uuid5(
        uuid.NAMESPACE_URL, f"skillcert:registration:{pid}:{IdType.RESIDENT_ID.value}:{form.id_number}"
    )
    assert rid != unkeyed
    with pytest.raises(Exception, match="already registered"):
        service.register(candidate(1), code, form)


def test_a_store_made_before_ids_were_keyed_is_refused_with_a_clear_message(service, database_url, schema) -> None:
    _, _, code = setup_plan(service)
    service.register(candidate(1), code, working_years_form(1))
    with psycopg.connect(database_url, autocommit=True) as conn:  # as an older version left it: no key
        conn.execute(f"DELETE FROM {schema}.installation_secrets WHERE name = 'registration_id_key'")
    with pytest.raises(StoreTooOld, match="before registration ids were keyed"):
        SkillcertApplication(database_url, schema)
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema}
    done = subprocess.run([sys.executable, "-m", "infra.cli", "relay", "status"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "start a new store" in done.stderr and "Traceback" not in done.stderr, done.stderr
