-- PostgreSQL's V9 orders the row locks of the replicas' slices. SQLite has
-- one writer and no slices; this file keeps the two migration lists aligned.
SELECT 1;
