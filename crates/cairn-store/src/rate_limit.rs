//! Rate-limit counters shared by replicas through the database.
