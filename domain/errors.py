"""Domain errors. Each names what is wrong so a caller can show it to a person."""

from __future__ import annotations


class DomainError(Exception):
    """A command broke a rule. `field` names the input at fault, when there is one."""

    rule = "domain-rule"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DomainError):
    rule = "invalid-input"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        # problems: (field, message) pairs, all of them, so a form can be fixed in one go
        self.problems = problems
        text = "; ".join(f"{f}: {m}" for f, m in problems)
        super().__init__(text, field=problems[0][0] if problems else None)


class NotFound(DomainError):
    rule = "not-found"


class Conflict(DomainError):
    """The command is valid but the current state forbids it."""

    rule = "conflict"


class Forbidden(DomainError):
    rule = "forbidden"
