-- PostgreSQL tells other processes about changes here (LISTEN/NOTIFY). An SQLite store has one
-- process, which notifies its sessions directly; nothing to add, the version stays in step.
SELECT 1;
