//! Failed-login counters and lockouts, per account name and per source address.
