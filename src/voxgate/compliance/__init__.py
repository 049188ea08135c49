"""Compliance: the tamper-evident audit chain, PII redaction, the redacting recorder, recordings,
retention purge and data-subject requests."""

from voxgate.compliance.audit import (
    GENESIS_HASH,
    AsyncAuditWriter,
    AuditError,
    AuditEvent,
    AuditLog,
    AuditWriteError,
    VerifyReport,
    audit_public_keys,
    canonical_data,
    chain_hash,
)

__all__ = [
    "GENESIS_HASH",
    "AsyncAuditWriter",
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "AuditWriteError",
    "VerifyReport",
    "audit_public_keys",
    "canonical_data",
    "chain_hash",
]
