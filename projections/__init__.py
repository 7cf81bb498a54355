"""Read models built from the bus. Each projection owns its tables and can be rebuilt."""

from projections.audit import Audit
from projections.candidates import Candidates
from projections.catalogue import Catalogue
from projections.certificates import Corrections, Registry

PROJECTIONS = [Catalogue(), Candidates(), Registry(), Corrections(), Audit()]
BY_NAME = {p.name: p for p in PROJECTIONS}
