-- Schema 5: where each process's ingress is reached (an expansion: binaries of schema 4 write
-- no URL, and are then reached through the inboxes only).
--
-- A request-response call for a partition another process runs is relayed to that process's
-- ingress, found by joining restate_partitions.owner_pid to this row. NULL: the process
-- advertises no URL (it binds every interface and was not told its address, or is older).
ALTER TABLE restate_members ADD COLUMN ingress_url text;
