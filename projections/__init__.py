"""Read models built from the bus. Each projection owns its tables and can be rebuilt."""

from projections.candidates import Candidates
from projections.catalogue import Catalogue
from projections.certificates import Corrections, Registry

PROJECTIONS = [Catalogue(), Candidates(), Registry(), Corrections()]
BY_NAME = {p.name: p for p in PROJECTIONS}
