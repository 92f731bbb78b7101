-- Schema 4: the writer's fence in one plain statement (an expansion: binaries of schema 3 keep
-- calling restate_fence_partitions, which stays, with the same locks and the same refusal).
--
-- Every transaction a writer commits is fenced. Through restate_fence_partitions, a PL/pgSQL
-- call of two queries, that cost about 0.1 ms of a one-insert commit's 0.22 ms (pgbench,
-- pipelined, concurrency 1). Schema 4's writer locks the partitions' rows FOR SHARE and
-- compares their epochs itself:
--
--   WITH locked AS (SELECT partition, epoch FROM restate_partitions
--       WHERE partition = ANY($1::int[]) ORDER BY partition FOR SHARE)
--   SELECT restate_fence_refused(array_agg(h.p ORDER BY h.p))
--   FROM unnest($1::int[], $2::bigint[]) AS h(p, e)
--   LEFT JOIN locked l ON l.partition = h.p
--   WHERE l.epoch IS DISTINCT FROM h.e HAVING count(*) > 0
--
-- and this function runs only when an epoch differs, to refuse the transaction. In READ
-- COMMITTED a row locked FOR SHARE is returned in its newest version (a takeover that
-- committed meanwhile is seen), and the lock is held to the end of the transaction, so no
-- takeover commits in between: what restate_fence_partitions guaranteed.
CREATE FUNCTION restate_fence_refused(lost int[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'fenced: another process has taken over partitions %',
        array_to_string(lost, ',')
        USING ERRCODE = 'RSF01', DETAIL = array_to_string(lost, ',');
END $$;
