"""Read models built from the bus. Each projection owns its tables and can be rebuilt."""

from projections.candidates import Candidates
from projections.catalogue import Catalogue

PROJECTIONS = [Catalogue(), Candidates()]
