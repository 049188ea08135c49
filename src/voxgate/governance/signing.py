"""Where the signing keys used to live: `voxgate.signing` is the module now (a leaf the audit chain
can use without importing governance); these names stay importable from here for existing callers."""

from voxgate.signing import KeyPair, PublicKey, SigningError, key_id_of

__all__ = ["KeyPair", "PublicKey", "SigningError", "key_id_of"]
