//! Wire types of login, sessions, MFA and lockouts.
