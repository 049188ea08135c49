"""Compliance: the tamper-evident audit chain (later: PII redaction, retention purge, data-subject erasure)."""

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
