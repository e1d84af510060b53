"""`reglab sweep` (placeholder until implemented)."""


def register(sub) -> None:
    pass
