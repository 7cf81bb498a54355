"""Benchmarks print their figures next to a baseline measured in the same run."""

import os

from infra.store.keys import new_key

# Their stores are thrown away: encrypt them under a throwaway master key rather than make a key file.
os.environ.setdefault("SKILLCERT_MASTER_KEY", new_key())
