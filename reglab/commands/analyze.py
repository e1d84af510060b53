"""`reglab analyze` (placeholder until implemented)."""


def register(sub) -> None:
    pass
