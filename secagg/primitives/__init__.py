"""Hazardous-materials layer: thin wrappers over ``cryptography`` and our Shamir sharing.

Every secret here comes from ``os.urandom`` or ``secrets``; no non-cryptographic generator is used.
Protocols build on these; users should not need them directly.
"""
