"""Security: encryption (keyring, bound ciphertexts), JWT minting and verification, the
principal a request acts as, and the access guard (lockouts, rate limits)."""
