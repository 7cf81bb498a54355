"""Blank certificate stock: the books balance after every event, and no form is used twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date
from threading import Barrier

import pytest

from domain.errors import Conflict, InvalidInput
from domain.levels import Level
from domain.stock import BlankStock, stock_id
from tests.builders import setup_plan
from tests.lifecycle import queryable_certificates, staff


def stored(w) -> int:
    return w.certificates.recorder.max_notification_id() or 0


def test_receipts_spoilage_destruction_and_stocktakes_keep_the_books(world):
    iid, _, _ = setup_plan(world.registrations)
    certs = world.certificates
    world.at(date(2026, 1, 26))
    certs.file_demand(staff(iid), iid, 2026, {Level.TWO: 120, Level.FIVE: 30})
    demand = certs.mapper.to_domain_event(certs.recorder.select_notifications(start=stored(world), limit=1)[0])
    assert isinstance(demand, BlankStock.DemandFiled) and demand.late  # due by 25 January
    certs.receive_forms(staff(iid), iid, 1001, 1100, "SH-2026-01")
    before = stored(world)
    with pytest.raises(Conflict, match="NO. 00001100-NO. 00001100 were already received"):
        certs.receive_forms(staff(iid), iid, 1100, 1200, "SH-2026-02")
    with pytest.raises(InvalidInput, match="first <= last"):
        certs.receive_forms(staff(iid), iid, 1300, 1200, "SH-2026-02")
    with pytest.raises(InvalidInput, match="spoiled form awaiting destruction"):
        certs.destroy_forms(staff(iid), iid, [1001], "王主任")
    with pytest.raises(InvalidInput, match="how the form was spoiled"):
        certs.spoil_form(staff(iid), iid, 1001, "")
    assert stored(world) == before
    certs.spoil_form(staff(iid), iid, 1001, "打印偏移")
    with pytest.raises(Conflict, match="is spoiled"):
        certs.spoil_form(staff(iid), iid, 1001, "again")
    certs.destroy_forms(staff(iid), iid, [1001], "监销人：王主任")
    world.at(date(2026, 7, 3))
    with pytest.raises(InvalidInput, match="differs from the books by -2; explain it"):
        certs.take_stock(staff(iid), iid, "2026-H2", 97)
    assert certs.take_stock(staff(iid), iid, "2026-H2", 97, "两张在打印机中卡纸未登记") == -2
    with pytest.raises(Conflict, match="already recorded"):
        certs.take_stock(staff(iid), iid, "2026-H2", 99)
    with pytest.raises(InvalidInput, match="has not begun"):
        certs.take_stock(staff(iid), iid, "2027-H1", 99)
    # An earlier half year after a later one would count today's forms against it (an outside review recorded H1 after
    # H2 and got H2's books as H1's, and H1 shown as the last stocktake).
    with pytest.raises(Conflict, match="2026-H2 is recorded already"):
        certs.take_stock(staff(iid), iid, "2026-H1", 99)
    books = certs.books(iid)
    assert (books.received, books.in_stock, books.used, books.spoiled, books.destroyed) == (100, 99, 0, 1, 1)


def test_printers_racing_for_forms_never_share_one_and_the_books_balance_after_every_event(world):
    iid, cids = queryable_certificates(world, 12)
    certs = world.certificates
    certs.receive_forms(staff(iid), iid, 1, 20, "SH-1")
    barrier = Barrier(len(cids) + 4)

    def print_one(cid):
        barrier.wait()
        return certs.print(staff(iid), cid, 7)  # everyone reaches for form 7 first

    def fallback(cid):
        try:
            return print_one(cid)
        except Conflict:
            return certs.print(staff(iid), cid)  # then takes the next one in stock

    def spoil(serial):
        barrier.wait()
        certs.spoil_form(staff(iid), iid, serial, "试打")

    with ThreadPoolExecutor(len(cids) + 4) as pool:
        printed = [pool.submit(fallback, c) for c in cids]
        spoiled = [pool.submit(spoil, s) for s in (17, 18, 19, 20)]
        forms = [f.result() for f in printed]
        for f in spoiled:
            f.result()
    assert len(set(forms)) == len(cids) and forms.count(7) == 1
    assert not set(forms) & {17, 18, 19, 20}
    stock = certs.stock(iid)
    assert sorted(stock.used) == sorted(forms)
    for version in range(1, stock.version + 1):
        books = certs.repository.get(stock_id(iid), version=version).books
        assert books.balanced, (version, books)
    assert (stock.books.in_stock, stock.books.used, stock.books.spoiled) == (20 - len(cids) - 4, len(cids), 4)


def test_the_stock_loaded_from_its_snapshot_is_the_stock_its_whole_history_makes(world):
    """Every print loads the stock: from its latest snapshot and the events since (benchmarks.stock_size)."""
    import uuid

    from domain.stock import BlankStock, stock_id

    iid, _ = queryable_certificates(world, 1)
    certs = world.certificates
    certs.receive_forms(staff(iid), iid, 1, 1000, "SH-1")
    stock = certs.stock(iid)
    for n in range(1, 451):
        stock.use(staff(iid), uuid.uuid4(), f"N{n}", n)
        if n % 100 == 0:
            certs.save(stock)
    certs.save(stock)
    certs.spoil_form(staff(iid), iid, 999, "卡纸")
    loaded = certs.get(BlankStock, stock_id(iid), "stock")
    replayed = None
    for e in certs.events.get(stock_id(iid)):
        replayed = e.mutate(replayed)
    assert loaded.snapshot_state() == replayed.snapshot_state() and loaded.version == replayed.version
    assert loaded.books.used == 450 and loaded.next_form() == 451
    assert certs.snapshots is not None and list(certs.snapshots.get(stock_id(iid)))  # it was loaded from one


def test_the_forms_used_are_kept_as_ranges_that_behave_as_a_set_of_serials():
    """The stock's state stays a few ranges however many forms it has used (benchmarks.stock_size); as a set of
    serials it must answer exactly as the set it replaces, through runs, gaps, merges and spoiled prints."""
    import random

    from domain.ranges import Ranges

    rng = random.Random(19)
    for _ in range(200):
        ranges, plain = Ranges(), set()
        for _ in range(rng.randint(1, 60)):
            if plain and rng.random() < 0.3:
                serial = rng.choice(sorted(plain))
                ranges.remove(serial)
                plain.discard(serial)
            else:
                first = rng.randint(1, 80)
                last = first + rng.choice([0, 0, 1, 5])
                ranges.add_range(first, last)
                plain.update(range(first, last + 1))
            assert list(ranges) == sorted(plain) and len(ranges) == len(plain)
            pairs = ranges.pairs()
            assert all(e + 1 < s for (_, e), (s, _) in zip(pairs, pairs[1:], strict=False))  # disjoint, not touching
            probe = rng.randint(0, 90)
            assert (probe in ranges) == (probe in plain)
            assert ranges.first_from(probe) == min(n for n in range(probe, 200) if n not in plain)
        with pytest.raises(KeyError):
            ranges.remove(1000)


def test_a_stock_snapshot_taken_before_the_forms_used_were_ranges_still_loads():
    import uuid

    from domain.stock import BlankStock

    iid = uuid.uuid4()
    old = {"institution_id": str(iid), "ranges": [[1, 100]], "used": {"1": "N1", "2": "N2", "5": "N5"},
           "spoiled": {"3": "卡纸"}, "destroyed": [], "stocktakes": {}, "demands": {}}  # fmt: skip
    state = BlankStock.restore_state(old)
    assert list(state["used"]) == [1, 2, 5] and state["used"].pairs() == [(1, 2), (5, 5)]
    stock = object.__new__(BlankStock)
    stock.__dict__.update(state)
    assert stock.next_form() == 4 and stock.books.used == 3 and stock.books.in_stock == 96


def test_no_two_institutions_receive_one_form_even_at_once(world):
    """Blank forms are numbered for the whole country: an outside review had a second institution receive forms the
    first already held, and each stock, seeing only its own receipts, took them. The blocks of serials a delivery falls
    in (domain.stock.FormBlock) are saved with it: of two institutions racing for overlapping forms one receives them,
    the other is refused naming the forms; a delivery across a block's edge is checked in both blocks."""
    from domain.institution import DeadlineProfile, Filing
    from tests.builders import ADMIN, SCOPE

    shenzhen, _, _ = setup_plan(world.registrations)
    guangzhou = world.registrations.register_institution(
        ADMIN, "广州市技能评价中心", Filing(city_code="01", station_serial="007"), DeadlineProfile.S, SCOPE
    )
    certs = world.certificates
    certs.receive_forms(staff(shenzhen), shenzhen, 199_901, 200_100, "SH-1")  # across the edge of two blocks
    before = stored(world)
    for first, last in ((200_100, 200_200), (199_000, 199_901), (150_000, 249_999)):
        with pytest.raises(Conflict, match="received by another institution"):
            certs.receive_forms(staff(guangzhou), guangzhou, first, last, "GZ-1")
    assert stored(world) == before
    certs.receive_forms(staff(guangzhou), guangzhou, 200_101, 200_200, "GZ-1")  # next to them: fine
    certs.receive_forms(staff(shenzhen), shenzhen, 300_001, 300_100, "SH-2")  # its own block again: fine

    barrier = Barrier(2)

    def receive(iid):
        barrier.wait()
        try:
            certs.receive_forms(staff(iid), iid, 500_001 if iid == shenzhen else 500_050, 500_100, "race")
            return "received"
        except Conflict as e:
            return e.message

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(receive, [shenzhen, guangzhou]))
    assert outcomes.count("received") == 1 and "received by another institution" in "".join(outcomes), outcomes
    won = 100 if outcomes[0] == "received" else 51  # Shenzhen asked for 500,001-500,100, Guangzhou 500,050-500,100
    assert certs.books(shenzhen).received + certs.books(guangzhou).received == 200 + 100 + 100 + won
