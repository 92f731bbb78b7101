-- Schema 3: a lease per partition (an expansion: schema 2 binaries keep using restate_lease).
--
-- Every process of the deployment leases a share of the partitions. A partition's epoch grows
-- at every takeover; a writer's transaction locks the rows of the partitions it writes (FOR
-- SHARE, in partition order) and is refused when one's epoch is no longer the one it took, so
-- a process that lost a partition (paused past its lease, cut off) commits nothing more for it.
-- Leases are renewed by the database's clock; a partition whose lease expired, or whose
-- owner's session is gone (a killed process), is free to take.
CREATE TABLE restate_partitions (
    partition  int PRIMARY KEY,
    epoch      bigint NOT NULL,
    owner_pid  int,
    expires_at timestamptz NOT NULL
);

-- The processes taking part, by their writer's session, so that each knows its fair share.
CREATE TABLE restate_members (
    pid        int PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

-- A partition key's partition: the unsigned 64-bit key (stored as bigint) modulo the count.
CREATE FUNCTION restate_partition(partition_key bigint, partitions int) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ((partition_key::numeric
        + CASE WHEN partition_key < 0 THEN 18446744073709551616 ELSE 0 END) % partitions)::int
$$;

-- Refuses the transaction unless every partition in `held` still has the epoch in `epochs`;
-- the rows stay locked until it ends, so no takeover commits in between.
CREATE FUNCTION restate_fence_partitions(held int[], epochs bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lost int[];
BEGIN
    PERFORM 1 FROM restate_partitions WHERE partition = ANY(held) ORDER BY partition FOR SHARE;
    SELECT array_agg(h.p ORDER BY h.p) INTO lost
        FROM unnest(held, epochs) AS h(p, e)
        LEFT JOIN restate_partitions r ON r.partition = h.p
        WHERE r.epoch IS DISTINCT FROM h.e;
    IF lost IS NOT NULL THEN
        RAISE EXCEPTION 'fenced: another process has taken over partitions %',
            array_to_string(lost, ',')
            USING ERRCODE = 'RSF01', DETAIL = array_to_string(lost, ',');
    END IF;
END $$;

-- Binaries of schema 3 hold restate_lease together, so that one of schema 2 (a rolling
-- deploy) waits as a standby: joint_epoch is the epoch they took it at. A schema 2 binary that
-- takes it over anyway (all of them gone) moves its epoch alone: every partition's epoch then
-- grows too, so that no schema 3 process commits beside it.
ALTER TABLE restate_lease ADD COLUMN joint_epoch bigint;

CREATE FUNCTION restate_lease_taken() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.epoch <> OLD.epoch AND NEW.joint_epoch IS NOT DISTINCT FROM OLD.joint_epoch THEN
        UPDATE restate_partitions SET epoch = epoch + 1, owner_pid = NULL,
            expires_at = '-infinity'
            WHERE partition IN (SELECT partition FROM restate_partitions
                                ORDER BY partition FOR UPDATE);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER restate_lease_taken BEFORE UPDATE ON restate_lease
    FOR EACH ROW EXECUTE FUNCTION restate_lease_taken();
