//! Who may write which partition: every process of a deployment leases a fair share of the
//! partitions (`restate_partitions`, schema 3), each lease with an epoch that grows at every
//! takeover. The writer runs a lease round every third of `RESTATE_LEASE_TTL`: it renews what
//! it holds by the database's clock, counts the live processes (`restate_members`), offers back
//! what it holds beyond its share, and takes free partitions up to it (expired, released, or
//! whose owner's session is gone: a killed process's partitions are taken at once). Every
//! transaction it commits is fenced on the epochs of the partitions it writes (the writer's
//! `FENCE` statement), so a process paused past its leases (SIGSTOP, a stall, a
//! network partition) and then continued commits nothing for the partitions taken from it.
//!
//! A process that releases partitions (a drain, or what it offered back) notifies
//! `restate_released`, and every other process runs a round at once: a drained process's
//! partitions are taken over by the others at once, not at their next renewal.
//!
//! A partition is offered back in two steps, so that its new owner never runs beside
//! leftovers of the old: it leaves the process's set first (the engine stops its
//! invocations), and its row is released only once the engine said that it left and that what
//! it wrote is decided ([`Storage::left`](crate::storage::Storage::left)).
//!
//! Losing a partition this process still believed held (its lease taken after it expired,
//! seen by a renewal or by the fence refusing a commit) drops that partition at once: it
//! leaves the process's set, so the engine stops what ran it, and the fence refuses whatever
//! of it was still queued. A write refused that way takes the other partitions it wrote
//! along (frozen: nothing of them commits any more, and they are offered back), since it may
//! have been all that their invocations had of it. The process goes on with the others, and
//! takes those partitions again only once the engine said it left them, so that no task of
//! the old run writes beside a new one. A drained process instead releases everything and is
//! handed over partition by partition.
//!
//! Binaries of schema 2 hold the whole database by `restate_lease`. Processes of this
//! schema hold that row together (renewed in every round, `joint_epoch` = `epoch`), so that an
//! older binary in a rolling deploy waits as a standby, and take partitions only while they
//! hold it; an older one that takes it over anyway moves every partition's epoch (a trigger),
//! which fences them all.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Statement};

use super::super::{Partitions, Peer, Peers};

/// The SQLSTATE the fence raises (`restate_fence_refused`, and schema 3's
/// `restate_fence_partitions`), its DETAIL naming the partitions.
pub(super) const FENCED_STATE: &str = "RSF01";

/// This process's leases, kept by its writer.
pub(super) struct Leases {
    ttl_ms: i64,
    count: u32,
    /// The joint lease of schema 3 processes is held: partitions may be taken.
    joined: bool,
    /// Held partitions and the epoch each was taken at.
    held: BTreeMap<u32, i64>,
    /// Held, but offered back: out of the process's set from the version of it given, and
    /// released once the engine says it left them in that version or a later one.
    leaving: BTreeMap<u32, u64>,
    /// Held and offered back, but no longer written: a write refused for a partition another
    /// process took wrote these too (see [`Leases::freeze`]).
    frozen: BTreeSet<u32>,
    /// Taken from this process while it held them: out of its set from the version given,
    /// and not taken here again before the engine says it left them (in that version or a
    /// later one).
    lost: BTreeMap<u32, u64>,
    /// The set last handed to the engine.
    published: Partitions,
    /// Drained: every partition's row is left free for others, and not renewed.
    released: bool,
    /// Released, and every partition taken by others: this process runs nothing more.
    handed_over: bool,
    /// When the leases were last renewed, and the fair share found then.
    renewed: Option<Instant>,
    /// Until when this process may take its leases for held, by its own clock (time since
    /// boot, [`crate::clock::since_boot`]): the start of the round that last renewed them,
    /// plus most of their length (the database's clock judges them, from a moment after that
    /// start).
    held_until: Option<Duration>,
    share: usize,
    /// Takes in a row that found nothing free: a process below its share looks less often.
    idle_takes: u32,
    statements: Statements,
    /// Where the processes' ingresses are: this one's URL is recorded with its membership,
    /// and the owners of the partitions are read back at every renewal.
    peers: Peers,
}

/// How often a process below its share looks for free partitions (released by a drained or
/// rebalancing process, or a killed one's) between renewals, and a drained one whether
/// others took its partitions over.
const LOOK_AGAIN: Duration = Duration::from_millis(200);

struct Statements {
    renew_joint: Statement,
    /// Locks the lease row while processes of this schema hold it.
    joint: Statement,
    take_joint: Statement,
    member: Statement,
    /// Removes the rows of processes whose membership expired (stopped or killed ones).
    prune_members: Statement,
    leave_members: Statement,
    live: Statement,
    renew: Statement,
    still_held: Statement,
    take: Statement,
    release: Statement,
    /// Each partition's owner that advertised its ingress, its lease current or not: a route
    /// changes only when another process takes the partition or it is released, not when a
    /// renewal comes late (a relay waiting on it would give up for nothing).
    routes: Statement,
}

/// What a lease round found that stops the store: a binary of schema 2 took the whole
/// database over (a trigger moved every partition's epoch).
#[derive(Debug)]
pub(super) struct LostDatabase;

impl Leases {
    pub(super) async fn prepare(
        client: &Client,
        ttl: Duration,
        count: u32,
        peers: Peers,
    ) -> Result<Self, tokio_postgres::Error> {
        // A process is known to the others by its writer's session, as its leases are.
        let me: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        peers.set_me(i64::from(me));
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        const UNTIL: &str = "clock_timestamp() + $1::bigint * interval '1 millisecond'";
        const GONE: &str =
            "NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = x.owner_pid)";
        let free = format!("(x.expires_at < clock_timestamp() OR x.owner_pid IS NULL OR {GONE})");
        let statements = Statements {
            renew_joint: client
                .prepare(&format!(
                    "UPDATE restate_lease SET expires_at = {UNTIL}, owner_pid = pg_backend_pid() \
                     WHERE id = 0 AND epoch = joint_epoch RETURNING epoch"
                ))
                .await?,
            joint: client
                .prepare(
                    "SELECT 1 FROM restate_lease WHERE id = 0 AND epoch = joint_epoch FOR SHARE",
                )
                .await?,
            // SKIP LOCKED: the transaction of a schema 2 owner in progress (it holds the row)
            // is not waited for and then judged by the lease it had before.
            take_joint: client
                .prepare(&format!(
                    "UPDATE restate_lease SET epoch = epoch + 1, joint_epoch = epoch + 1, \
                     owner_pid = pg_backend_pid(), expires_at = {UNTIL} \
                     WHERE id = (SELECT id FROM restate_lease x WHERE x.id = 0 AND {free} \
                     FOR UPDATE SKIP LOCKED) RETURNING epoch"
                ))
                .await?,
            member: client
                .prepare(&format!(
                    "INSERT INTO restate_members (pid, expires_at, ingress_url) \
                     VALUES (pg_backend_pid(), {UNTIL}, $2) \
                     ON CONFLICT (pid) DO UPDATE SET expires_at = EXCLUDED.expires_at, \
                     ingress_url = EXCLUDED.ingress_url"
                ))
                .await?,
            prune_members: client
                .prepare("DELETE FROM restate_members WHERE expires_at < clock_timestamp()")
                .await?,
            leave_members: client
                .prepare(
                    "DELETE FROM restate_members WHERE pid = pg_backend_pid() \
                     OR expires_at < clock_timestamp()",
                )
                .await?,
            live: client
                .prepare(
                    "SELECT count(*) FROM restate_members m \
                     WHERE m.expires_at > clock_timestamp() \
                     AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = m.pid)",
                )
                .await?,
            // In partition order, as the fences lock them: no deadlock with a takeover.
            renew: client
                .prepare(&format!(
                    "UPDATE restate_partitions r SET expires_at = {UNTIL}, \
                     owner_pid = pg_backend_pid() \
                     FROM unnest($2::int[], $3::bigint[]) AS h(p, e) \
                     WHERE r.partition = h.p AND r.epoch = h.e AND r.partition IN \
                     (SELECT partition FROM restate_partitions WHERE partition = ANY($2) \
                     ORDER BY partition FOR UPDATE) RETURNING r.partition"
                ))
                .await?,
            still_held: client
                .prepare(
                    "SELECT r.partition FROM restate_partitions r \
                     JOIN unnest($1::int[], $2::bigint[]) AS h(p, e) \
                     ON r.partition = h.p AND r.epoch = h.e",
                )
                .await?,
            take: client
                .prepare(&format!(
                    "UPDATE restate_partitions SET epoch = epoch + 1, \
                     owner_pid = pg_backend_pid(), expires_at = {UNTIL} \
                     WHERE partition IN (SELECT x.partition FROM restate_partitions x \
                     WHERE {free} AND x.partition <> ALL($2::int[]) \
                     ORDER BY x.partition LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     RETURNING partition, epoch"
                ))
                .await?,
            release: client
                .prepare(
                    "UPDATE restate_partitions r SET expires_at = '-infinity', owner_pid = NULL \
                     FROM unnest($1::int[], $2::bigint[]) AS h(p, e) \
                     WHERE r.partition = h.p AND r.epoch = h.e AND r.partition IN \
                     (SELECT partition FROM restate_partitions WHERE partition = ANY($1) \
                     ORDER BY partition FOR UPDATE)",
                )
                .await?,
            routes: client
                .prepare(
                    "SELECT r.partition, m.pid, m.ingress_url FROM restate_partitions r \
                     JOIN restate_members m ON m.pid = r.owner_pid \
                     WHERE m.ingress_url IS NOT NULL",
                )
                .await?,
        };
        Ok(Self {
            ttl_ms,
            count,
            joined: false,
            held: BTreeMap::new(),
            leaving: BTreeMap::new(),
            lost: BTreeMap::new(),
            frozen: BTreeSet::new(),
            published: Partitions::none(count),
            released: false,
            handed_over: false,
            renewed: None,
            held_until: None,
            share: 0,
            idle_takes: 0,
            statements,
            peers,
        })
    }

    /// How long a lease lasts without a renewal.
    pub(super) fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms as u64)
    }

    /// The leases are renewed every third of their length.
    fn every(&self) -> Duration {
        (self.ttl() / 3).max(Duration::from_millis(1))
    }

    /// How long until the next round: the next renewal, a third of the lease after the last
    /// (a round between, for a notification or a look for free partitions, does not put it
    /// off); sooner while released (to see the hand-over) or below the fair share (to take
    /// what is freed at once).
    pub(super) fn next_round_in(&self) -> Duration {
        let hungry = self.member() && !self.released && self.held.len() < self.share;
        let every = self.every();
        if self.released {
            return every.min(LOOK_AGAIN);
        }
        let renewal = self
            .renewed
            .map_or(Duration::ZERO, |at| every.saturating_sub(at.elapsed()));
        match hungry {
            // 0.2 s, doubled after each look that found nothing free, up to 1.6 s: a process
            // that stays below its share (the count does not divide) does not poll hard.
            true => renewal.min(LOOK_AGAIN * 2u32.pow(self.idle_takes.min(3))),
            false => renewal,
        }
    }

    /// The partitions this process runs now (those held and not offered back), numbered
    /// anew when they changed since last asked.
    pub(super) fn running(&mut self) -> Partitions {
        let leaving = &self.leaving;
        let now = Partitions::of(
            self.count,
            self.held
                .keys()
                .filter(|p| !leaving.contains_key(p))
                .copied(),
        );
        if now != self.published {
            self.published = now.numbered(self.published.version() + 1);
        }
        self.published.clone()
    }

    /// Until when the leases held now may be taken for held ([`Leases::held_until`]).
    pub(super) fn held_until(&self) -> Option<Duration> {
        self.held_until
    }

    /// Whether this process takes part: it holds the joint lease and was not handed over.
    pub(super) fn member(&self) -> bool {
        self.joined && !self.handed_over
    }

    pub(super) fn released(&self) -> bool {
        self.released
    }

    pub(super) fn handed_over(&self) -> bool {
        self.handed_over
    }

    /// The epoch `partition` is held at, if it is held and may be written.
    pub(super) fn epoch(&self, partition: u32) -> Option<i64> {
        match self.frozen.contains(&partition) {
            true => None,
            false => self.held.get(&partition).copied(),
        }
    }

    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// One round: renews the joint lease and this process's, gives back what is beyond its
    /// share and takes free partitions up to it.
    pub(super) async fn round(
        &mut self,
        client: &Client,
    ) -> Result<Result<(), LostDatabase>, String> {
        let started = crate::clock::since_boot();
        let due = self.renewed.is_none_or(|at| at.elapsed() >= self.every());
        if !due && self.member() && !self.released {
            // Between renewals: only free partitions are looked for, up to a share that counts
            // who is live now (a drained process leaves the count at its release).
            self.count_share(client).await?;
            self.take(client).await?;
            // What it took, and what the others still run, is routed at once.
            self.read_routes(client).await;
            return Ok(Ok(()));
        }
        let s = &self.statements;
        let joint = match client.query_opt(&s.renew_joint, &[&self.ttl_ms]).await {
            Ok(Some(row)) => Some(row.get::<_, i64>(0)),
            Ok(None) => (client.query_opt(&s.take_joint, &[&self.ttl_ms]).await)
                .map_err(|e| super::pg_error(&e))?
                .map(|row| row.get(0)),
            Err(e) => return Err(super::pg_error(&e)),
        };
        if joint.is_none() {
            if self.joined {
                return Ok(Err(LostDatabase));
            }
            return Ok(Ok(()));
        }
        if !self.joined {
            tracing::info!("this process takes part in running the database's partitions");
            self.joined = true;
        }
        if self.handed_over {
            return Ok(Ok(()));
        }
        if self.released {
            self.forget_taken(client).await?;
            return Ok(Ok(()));
        }
        // Housekeeping only (an expired row is not counted as live anyway): a failure, such as
        // two processes pruning the same rows at once, is no reason to stop.
        if let Err(e) = client.execute(&s.prune_members, &[]).await {
            tracing::debug!("pruning expired members failed: {}", super::pg_error(&e));
        }
        let url = self.peers.advertised().map(|u| u.to_string());
        client
            .execute(&s.member, &[&self.ttl_ms, &url])
            .await
            .map_err(|e| super::pg_error(&e))?;
        let (partitions, epochs) = self.held_columns(|_| true);
        let renewed: BTreeSet<u32> = (client
            .query(&s.renew, &[&self.ttl_ms, &partitions, &epochs]))
        .await
        .map_err(|e| super::pg_error(&e))?
        .iter()
        .map(|row| row.get::<_, i32>(0) as u32)
        .collect();
        let taken: Vec<u32> = self
            .held
            .keys()
            .filter(|p| !renewed.contains(p))
            .copied()
            .collect();
        if !taken.is_empty() {
            self.lose(&taken);
        }
        self.renewed = Some(Instant::now());
        self.held_until = Some(started + self.ttl() * 9 / 10);
        let share = self.count_share(client).await?;
        let running = self.held.len() - self.leaving.len();
        if running > share {
            // The highest first: a process that joins takes the lowest free ones.
            let extra: Vec<u32> = (self.held.keys().rev())
                .filter(|p| !self.leaving.contains_key(p))
                .take(running - share)
                .copied()
                .collect();
            tracing::info!(
                partitions = extra.len(),
                share,
                "offering partitions back: more processes run the database now"
            );
            // Out of the set the round publishes next.
            let version = self.published.version() + 1;
            self.leaving.extend(extra.into_iter().map(|p| (p, version)));
        } else {
            self.take(client).await?;
        }
        self.read_routes(client).await;
        Ok(Ok(()))
    }

    /// Reads which process runs each partition, and at which URL, for relaying
    /// ([`Peers`]). A lease taken over since shows at the next renewal: a call relayed to a
    /// process that no longer runs the partition goes through the inbox from there.
    async fn read_routes(&self, client: &Client) {
        let rows = match client.query(&self.statements.routes, &[]).await {
            Ok(rows) => rows,
            // Only relaying needs them: the routes read last stand (a stale one is refused by
            // its process, and the call goes through the inbox).
            Err(e) => {
                tracing::warn!(
                    "reading where the processes serve failed: {}",
                    super::pg_error(&e)
                );
                return;
            }
        };
        let routes = rows.iter().map(|row| {
            let peer = Peer {
                process: i64::from(row.get::<_, i32>(1)),
                url: row.get::<_, &str>(2).into(),
            };
            (row.get::<_, i32>(0) as u32, peer)
        });
        self.peers.set_routes(self.count, routes);
    }

    /// This process's fair share of the partitions among the live processes.
    async fn count_share(&mut self, client: &Client) -> Result<usize, String> {
        let live = (client.query_one(&self.statements.live, &[]).await)
            .map_err(|e| super::pg_error(&e))?
            .get::<_, i64>(0)
            .max(1) as u32;
        self.share = self.count.div_ceil(live) as usize;
        Ok(self.share)
    }

    /// Takes free partitions up to the share (not while another process changes leases: a
    /// take next round does).
    async fn take(&mut self, client: &Client) -> Result<(), String> {
        if self.held.len() >= self.share {
            return Ok(());
        }
        // Not one lost here that the engine may still run.
        let mine: Vec<i32> = (self.held.keys().chain(self.lost.keys()))
            .map(|p| *p as i32)
            .collect();
        let want = (self.share - self.held.len()) as i64;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&self.ttl_ms, &mine, &want];
        let take = async {
            // Only while processes of this schema hold the database, and with its lease row
            // locked: an older binary's takeover (whose trigger moves every partition's epoch)
            // comes wholly before or after.
            if client
                .query_opt(&self.statements.joint, &[])
                .await?
                .is_none()
            {
                return Ok(Vec::new());
            }
            client.query(&self.statements.take, &params).await
        };
        // Another process moves partitions now (told of the same release, say): this one
        // looks again soon, not as after a look that found nothing free.
        let Some(rows) = exclusively(client, false, take).await? else {
            return Ok(());
        };
        self.idle_takes = match rows.is_empty() {
            true => self.idle_takes + 1,
            false => 0,
        };
        for row in &rows {
            self.held
                .insert(row.get::<_, i32>(0) as u32, row.get::<_, i64>(1));
        }
        if !rows.is_empty() {
            tracing::info!(partitions = rows.len(), "this process took partitions over");
        }
        Ok(())
    }

    /// Partitions taken from this process while it held them (a renewal or the fence found
    /// their epoch moved): dropped at once, and not taken again here before the engine left
    /// them.
    pub(super) fn lose(&mut self, taken: &[u32]) {
        tracing::error!(
            partitions = ?taken,
            "another process took over partitions this one held (it was paused or cut off \
             longer than its lease); this one drops them"
        );
        // The next round renews everything: whatever else moved is found at once.
        self.renewed = None;
        self.forget(taken.iter().copied());
    }

    /// `taken` are another process's now: out of this one's hands, and not taken here again
    /// before the engine left them.
    fn forget(&mut self, taken: impl IntoIterator<Item = u32>) {
        let version = self.published.version() + 1;
        for p in taken {
            if self.held.remove(&p).is_none() {
                continue;
            }
            self.frozen.remove(&p);
            // One offered back left the set at that version already.
            let since = self.leaving.remove(&p).unwrap_or(version);
            self.lost.insert(p, since);
        }
    }

    /// Stops writing `partitions` (those of them held) and offers them back at once: a write
    /// refused for a partition another process took wrote these too, and may have been all
    /// that their invocations had of it. Nothing of them commits from now on (a later write
    /// of such an invocation must not land without the refused one); whoever takes them next,
    /// this process too, recovers their invocations from the store.
    pub(super) fn freeze(&mut self, partitions: impl IntoIterator<Item = u32>) {
        let version = self.published.version() + 1;
        for p in partitions {
            if self.held.contains_key(&p) && self.frozen.insert(p) {
                self.leaving.entry(p).or_insert(version);
            }
        }
    }

    /// The engine acted on `observed`: the partitions offered back up to its version and
    /// outside it are released now, and those lost up to it may be taken again.
    pub(super) async fn left(
        &mut self,
        client: &Client,
        observed: &Partitions,
    ) -> Result<(), String> {
        let gone = |p: u32, since: u64| !observed.contains(p) && observed.version() >= since;
        self.lost.retain(|p, since| !gone(*p, *since));
        let done: BTreeSet<u32> = self
            .leaving
            .iter()
            .filter(|(p, offered)| gone(**p, **offered))
            .map(|(p, _)| *p)
            .collect();
        if done.is_empty() {
            return Ok(());
        }
        let (ids, epochs) = self.held_columns(|p| done.contains(&p));
        client
            .execute(&self.statements.release, &[&ids, &epochs])
            .await
            .map_err(|e| super::pg_error(&e))?;
        for p in done {
            self.leaving.remove(&p);
            self.frozen.remove(&p);
            self.held.remove(&p);
        }
        tell_released(client).await;
        Ok(())
    }

    /// Drained (`true`): every held row is left free, renewals stop, and this process stops
    /// counting as a member; or held again (`false`): what is still this process's is renewed.
    pub(super) async fn release(&mut self, client: &Client, release: bool) -> Result<(), String> {
        let s = &self.statements;
        if release {
            let (ids, epochs) = self.held_columns(|_| true);
            client
                .execute(&s.release, &[&ids, &epochs])
                .await
                .map_err(|e| super::pg_error(&e))?;
            client
                .execute(&s.leave_members, &[])
                .await
                .map_err(|e| super::pg_error(&e))?;
            self.released = true;
            tell_released(client).await;
            return Ok(());
        }
        // All or nothing against a takeover of the released partitions: what another process
        // takes, it takes in one statement while no renewal runs.
        let started = crate::clock::since_boot();
        let (ids, epochs) = self.held_columns(|_| true);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&self.ttl_ms, &ids, &epochs];
        let renew = client.query(&s.renew, &params);
        let renewed: BTreeSet<u32> = (exclusively(client, true, renew).await?)
            .unwrap_or_default()
            .iter()
            .map(|row| row.get::<_, i32>(0) as u32)
            .collect();
        let taken: Vec<u32> = (self.held.keys())
            .filter(|p| !renewed.contains(p))
            .copied()
            .collect();
        self.forget(taken);
        if self.held.is_empty() {
            self.handed_over = true;
            return Ok(());
        }
        let url = self.peers.advertised().map(|u| u.to_string());
        client
            .execute(&self.statements.member, &[&self.ttl_ms, &url])
            .await
            .map_err(|e| super::pg_error(&e))?;
        self.released = false;
        // Renewed just now: held again from here, not from the last round before the drain.
        self.held_until = Some(started + self.ttl() * 9 / 10);
        Ok(())
    }

    /// Released: the partitions another process took since are this process's no more.
    async fn forget_taken(&mut self, client: &Client) -> Result<(), String> {
        let (ids, epochs) = self.held_columns(|_| true);
        let still: BTreeSet<u32> = (client.query(&self.statements.still_held, &[&ids, &epochs]))
            .await
            .map_err(|e| super::pg_error(&e))?
            .iter()
            .map(|row| row.get::<_, i32>(0) as u32)
            .collect();
        self.handed(|p| !still.contains(&p));
        Ok(())
    }

    /// Released, and the fence refused `partitions`: another process has them now.
    pub(super) fn handed(&mut self, gone: impl Fn(u32) -> bool) {
        let taken: Vec<u32> = self.held.keys().filter(|p| gone(**p)).copied().collect();
        self.forget(taken);
        if self.held.is_empty() {
            self.handed_over = true;
        }
    }

    fn held_columns(&self, keep: impl Fn(u32) -> bool) -> (Vec<i32>, Vec<i64>) {
        self.held
            .iter()
            .filter(|(p, _)| keep(**p))
            .map(|(p, e)| (*p as i32, *e))
            .unzip()
    }
}

/// Tells the other processes that partitions were released here, so that they count the live
/// processes and take what is free now rather than at their next round. Only a hint: a
/// process that misses it takes them at that round.
async fn tell_released(client: &Client) {
    let notify = format!("NOTIFY {}", super::RELEASED_CHANNEL);
    if let Err(e) = client.batch_execute(&notify).await {
        tracing::debug!(
            "telling the others of released partitions failed: {}",
            super::pg_error(&e)
        );
    }
}

/// Taken by the statements that move released partitions, so that a takeover and an
/// undrain's renewal do not split them between two processes.
const MOVING: i64 = 0x7265_7374_6174_6532; // "restate2"

/// Runs `work` in a transaction that holds [`MOVING`]: waiting for it (`wait`), or `None`
/// when another process holds it now.
async fn exclusively<T>(
    client: &Client,
    wait: bool,
    work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<Option<T>, String> {
    let lock = match wait {
        true => "SELECT true FROM pg_advisory_xact_lock($1)",
        false => "SELECT pg_try_advisory_xact_lock($1)",
    };
    let run = async {
        client.batch_execute("BEGIN").await?;
        if !client.query_one(lock, &[&MOVING]).await?.get::<_, bool>(0) {
            client.batch_execute("ROLLBACK").await?;
            return Ok(None);
        }
        let done = work.await?;
        client.batch_execute("COMMIT").await?;
        Ok(Some(done))
    };
    let done: Result<Option<T>, tokio_postgres::Error> = run.await;
    if done.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    done.map_err(|e| super::pg_error(&e))
}
