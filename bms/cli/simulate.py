"""Placeholder verb (filled in below)."""
def add_subparser(subparsers):
    pass
