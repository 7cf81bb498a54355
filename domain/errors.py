"""Domain errors. Each names what is wrong so a caller can show it to a person."""

from __future__ import annotations


class DomainError(Exception):
    """A command broke a rule. `field` names the input at fault, when there is one."""

    rule = "domain-rule"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


LISTED = 5_000  # problems an answer lists: one for each row of the largest import
MORE = "more"  # the field of the entry counting the problems not listed
SHOWN = 20  # problems spelled out in a message; the rest are counted (a file of 5,000 bad rows lists them all apart)


def first_of(parts: list[str], sep: str) -> str:
    """The first SHOWN parts joined, and how many more there are."""
    more = f"{sep.strip()} and {len(parts) - SHOWN} more" if len(parts) > SHOWN else ""
    return sep.join(parts[:SHOWN]) + more


class InvalidInput(DomainError):
    rule = "invalid-input"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        # problems: (field, message) pairs, all of them, so a form can be fixed in one go; but a bounded list, so a file
        # of tens of thousands of bad cells answers kilobytes, not a hundred megabytes
        cut = [p for p in problems if p[0] == MORE]  # cut already, and perhaps sorted since: the count stays last
        if cut:
            problems = [p for p in problems if p[0] != MORE] + cut[:1]
        elif len(problems) > LISTED:
            more = len(problems) - LISTED
            problems = [*problems[:LISTED], (MORE, f"and {more:,} more problems, not listed: fix these, then send "
                                             "it again to see the rest")]  # fmt: skip
        self.problems = problems
        text = first_of([f"{f}: {m}" for f, m in problems], "; ")
        if len(problems) > SHOWN:
            text += " (each is listed apart)"
        super().__init__(text, field=problems[0][0] if problems else None)


class NotFound(DomainError):
    rule = "not-found"


class Conflict(DomainError):
    """The command is valid but the current state forbids it; `problems`, when given, names each input it
    concerns (the rows of a list that someone else registered meanwhile)."""

    rule = "conflict"

    def __init__(
        self, message: str, *, field: str | None = None, problems: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.problems = problems or []


class NotEvaluating(Conflict):
    """The institution's evaluation business is suspended or withdrawn (004 第十条): its own problem type, so that a
    client tells it from other conflicts."""

    rule = "institution-not-evaluating"


class StandingChanging(DomainError):
    """The centre is changing the institution's standing this moment, or could not for the acts in progress: try
    again after `retry_after` seconds (a 503 with Retry-After)."""

    rule = "institution-standing-changing"

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Forbidden(DomainError):
    rule = "forbidden"
