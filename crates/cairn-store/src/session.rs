//! Login sessions, stored by the SHA-256 of their id.
