-- PostgreSQL now compares hashes bytewise; SQLite always has (BINARY). Nothing to change.
SELECT 1;
