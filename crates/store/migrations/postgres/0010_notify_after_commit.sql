-- Change notices are no longer sent by a trigger inside each writing transaction: PostgreSQL
-- serialises the commits of all transactions that NOTIFY (one database-wide lock, held
-- through the WAL flush), which took away group commit and cut writes by 2.5x. Trimaran now
-- sends the notices itself right after its commits (`Notifier` in the PostgreSQL store).
DROP TRIGGER accounts_modseq_notify ON accounts;
DROP FUNCTION trimaran_notify_change();
