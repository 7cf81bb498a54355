"""Read models built from the bus. Each projection owns its tables and can be rebuilt."""

from projections.audit import Audit
from projections.candidates import Candidates
from projections.catalogue import Catalogue
from projections.certificates import Corrections, Registry
from projections.deadlines import Deadlines
from projections.statistics import Statistics
from projections.stock import StockLedger

PROJECTIONS = [Catalogue(), Candidates(), Registry(), Corrections(), Audit(), Deadlines(), StockLedger(), Statistics()]
BY_NAME = {p.name: p for p in PROJECTIONS}
