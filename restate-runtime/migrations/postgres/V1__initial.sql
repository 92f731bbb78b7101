-- Schema 1 of the PostgreSQL backend (restate-runtime/src/storage/postgres/). Names are
-- prefixed so that the tables can share a database with the application's own. Service, key
-- and state names are bytea (their UTF-8 bytes): any string a handler may use is stored, NUL
-- included, whatever the database's encoding, and sorts in byte order, as in the other stores.
--
-- Rolling deploys: a migration either expands (adds what the previous binary ignores) or
-- contracts (removes what it still needs). A contraction raises 'oldest_binary_schema' to its
-- own version, and a binary whose newest migration is older refuses to start on it.

CREATE TABLE restate_meta (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);
INSERT INTO restate_meta (name, value) VALUES ('oldest_binary_schema', int4send(1));

-- One row per invocation. An unfinished one has its recovery hint (and its due time when it
-- waits on a timer); a finished one has the time its retention ends.
CREATE TABLE restate_invocations (
    id            bytea PRIMARY KEY,
    partition_key bigint NOT NULL,
    record        bytea NOT NULL,
    hint          bytea,
    due_ms        bigint,
    expires_at_ms bigint
);
CREATE INDEX restate_invocations_unfinished ON restate_invocations (id) WHERE hint IS NOT NULL;
CREATE INDEX restate_invocations_due ON restate_invocations (due_ms, id) WHERE due_ms IS NOT NULL;
CREATE INDEX restate_invocations_expiry ON restate_invocations (expires_at_ms, id)
    WHERE expires_at_ms IS NOT NULL;

CREATE TABLE restate_journal (
    id    bytea  NOT NULL,
    idx   bigint NOT NULL,
    entry bytea  NOT NULL,
    PRIMARY KEY (id, idx)
);

CREATE TABLE restate_state (
    service bytea NOT NULL,
    key     bytea NOT NULL,
    name    bytea NOT NULL,
    value   bytea NOT NULL,
    PRIMARY KEY (service, key, name)
);

CREATE TABLE restate_promises (
    service bytea NOT NULL,
    key     bytea NOT NULL,
    name    bytea NOT NULL,
    outcome bytea NOT NULL,
    PRIMARY KEY (service, key, name)
);

CREATE TABLE restate_promise_waiters (
    service bytea NOT NULL,
    key     bytea NOT NULL,
    name    bytea NOT NULL,
    id      bytea  NOT NULL,
    idx     bigint NOT NULL,
    PRIMARY KEY (service, key, name, id, idx)
);

-- Law 9: a completion from outside commits its waiter's wake-up with it.
CREATE TABLE restate_wakes (
    id  bytea  NOT NULL,
    idx bigint NOT NULL,
    PRIMARY KEY (id, idx)
);

CREATE TABLE restate_result_waiters (
    source bytea   NOT NULL,
    waiter bytea   NOT NULL,
    idx    bigint  NOT NULL,
    call   boolean NOT NULL,
    PRIMARY KEY (source, waiter, idx)
);

-- Who may write: one process at a time holds the lease. Its epoch grows at every takeover;
-- every transaction of the owner calls restate_fence first, which renews the lease by the
-- database's clock and aborts the transaction when another process has taken over since. A
-- takeover needs the lease expired, or the owner's session gone.
CREATE TABLE restate_lease (
    id         int PRIMARY KEY CHECK (id = 0),
    epoch      bigint NOT NULL,
    owner_pid  int,
    expires_at timestamptz NOT NULL
);
INSERT INTO restate_lease (id, epoch, owner_pid, expires_at) VALUES (0, 0, NULL, '-infinity');

CREATE FUNCTION restate_fence(held_epoch bigint, ttl_ms bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE restate_lease SET expires_at = clock_timestamp() + ttl_ms * interval '1 millisecond'
        WHERE id = 0 AND epoch = held_epoch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fenced: another process has taken this database over (this one held epoch %)',
            held_epoch;
    END IF;
END $$;
