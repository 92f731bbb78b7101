-- Schema 2: inboxes (an expansion: schema 1 binaries ignore the table). A process that does
-- not run an invocation's partition writes what it accepted for it here, durably, before it
-- answers; the partition's owner applies the messages in arrival order and deletes each once
-- its effect is durable. A message that starts an invocation is unique per invocation id, so
-- a duplicate (the same idempotency key or webhook event id at another process) is found in
-- the same transaction as the insert.
CREATE TABLE restate_inbox (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition_key bigint  NOT NULL,
    id            bytea   NOT NULL,
    starts        boolean NOT NULL,
    message       bytea   NOT NULL
);
CREATE UNIQUE INDEX restate_inbox_starts ON restate_inbox (id) WHERE starts;
-- The owner looks here before running work for a key another process accepted first.
CREATE INDEX restate_inbox_partition_key ON restate_inbox (partition_key);
