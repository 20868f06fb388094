"""Encryption keys: status and rotation of every ciphertext column (the keyring itself is
``zixly.security.crypto``)."""
