"""rsched: ACGME-compliant residency scheduling."""

__version__ = "0.1.0"
