//! Per-key lanes: exclusive invocations of an object or workflow key run one at a time in
//! arrival order, and see the key's state through an overlay of writes not yet durable.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Engine, Inflight};
use crate::ids::InvocationId;
use crate::maps::{FastMap, FastSet};
use crate::registry::{HandlerKind, ServiceKind};
use crate::storage::{Placement, StateScope, Target};

/// Writes made through a lane; they stay here until the lane is dropped (after they are durable).
#[derive(Default)]
pub(crate) struct StateOverlay {
    values: FastMap<String, Option<Vec<u8>>>,
    cleared_all: bool,
}

/// One invocation waiting for its key.
pub(crate) enum Queued {
    /// Waiting on disk, loaded when its turn comes: one restored after a restart, or a delayed
    /// send that fell due behind a busy key (memory is then set by what runs, not by how
    /// many wait).
    Stored(InvocationId),
    /// Waiting in memory (it arrived, or something loaded it).
    Loaded(Arc<Inflight>),
}

impl Queued {
    fn id(&self) -> InvocationId {
        match self {
            Self::Stored(id) => *id,
            Self::Loaded(inflight) => inflight.id,
        }
    }
}

/// The exclusive invocation running on one key, those waiting in arrival order, and the key's
/// recent writes.
#[derive(Default)]
pub(crate) struct Lane {
    pub running: Option<InvocationId>,
    /// Those waiting for the key, in arrival order.
    queue: VecDeque<Queued>,
    /// The ids of the queue's stored ones: a timer that fires again for one (its due time is
    /// still on disk) finds it queued.
    stored: FastSet<InvocationId>,
    /// Sends queued here (running or waiting) whose place their sender's commit still
    /// decides: one taken in from the inbox behind them overtakes them ([`Placement`]).
    placements: Vec<Arc<Placement>>,
    overlay: StateOverlay,
    /// Its last write's number in the engine's count of lane writes (0: none): an idle lane is
    /// dropped only if nothing was written through it since the barrier that made its writes
    /// durable was submitted. Counted over all lanes, not per lane: a key's lane dropped and
    /// made again must not take up a number that a candidate queued for the earlier lane holds
    /// (its barrier does not cover the new lane's writes).
    epoch: u64,
}

/// Who holds a key after its holder released it.
enum Next {
    /// A recovered invocation still on disk.
    Stored(InvocationId),
    /// One that arrived in memory.
    Queued(Arc<Inflight>),
    /// Nobody: the lane goes once its writes are durable.
    Idle,
}

/// Lanes that went idle, with their epoch then, waiting for the sweep that drops them.
#[derive(Default)]
pub(crate) struct IdleLanes {
    candidates: Vec<(StateScope, u64)>,
    /// A sweep task is running; it takes every candidate queued before its next round.
    sweeping: bool,
}

/// Drops idle lanes in rounds: a round takes the candidates queued so far, then submits a
/// barrier. Each candidate was queued after its lane's last write was submitted, so once the
/// barrier is durable those writes are too, and a lane that is still idle with the same epoch
/// can go (its state is read from storage from then on).
async fn sweep_idle_lanes(engine: Engine) {
    loop {
        let candidates = {
            let mut idle = engine.idle_lanes.lock().expect("idle lanes");
            if idle.candidates.is_empty() {
                idle.sweeping = false;
                return;
            }
            std::mem::take(&mut idle.candidates)
        };
        // A failed commit stops all writes; the lanes then stay (their overlay stays right).
        if engine.storage.submit(Vec::new()).await.is_err() {
            continue;
        }
        let mut lanes = engine.lanes.lock().expect("lanes");
        for (scope, epoch) in candidates {
            let idle = lanes
                .get(&scope)
                .is_some_and(|l| l.epoch == epoch && l.running.is_none() && l.queue.is_empty());
            if idle {
                lanes.remove(&scope);
            }
        }
    }
}

impl Lane {
    /// Queues one waiting on disk last (`back`), or first (it goes right after the holder).
    pub(crate) fn queue_stored(&mut self, id: InvocationId, back: bool) {
        if self.stored.insert(id) {
            match back {
                true => self.queue.push_back(Queued::Stored(id)),
                false => self.queue.push_front(Queued::Stored(id)),
            }
        }
    }

    /// Whether `id` waits on disk in this queue.
    pub(crate) fn queued_stored(&self, id: &InvocationId) -> bool {
        self.stored.contains(id)
    }

    /// The next in line, out of the queue.
    fn pop(&mut self) -> Option<Queued> {
        let next = self.queue.pop_front()?;
        if let Queued::Stored(id) = &next {
            self.stored.remove(id);
        }
        Some(next)
    }

    /// Takes `id` out of the queue, stored or loaded (a walk of the queue).
    pub(crate) fn remove(&mut self, id: &InvocationId) {
        if self.stored.remove(id) {
            self.queue
                .retain(|q| !matches!(q, Queued::Stored(s) if s == id));
        }
        self.queue.retain(|q| match q {
            Queued::Loaded(f) if f.id == *id => {
                f.queued.store(false, std::sync::atomic::Ordering::SeqCst);
                false
            }
            _ => true,
        });
    }

    /// How many wait.
    pub(crate) fn depth(&self) -> usize {
        self.queue.len()
    }

    /// The ones waiting in memory, in order.
    #[cfg(test)]
    pub(crate) fn loaded(&self) -> impl Iterator<Item = &Arc<Inflight>> {
        self.queue.iter().filter_map(|q| match q {
            Queued::Loaded(f) => Some(f),
            Queued::Stored(_) => None,
        })
    }

    /// The ids of all that wait, in order.
    #[cfg(test)]
    pub(crate) fn queued_ids(&self) -> Vec<InvocationId> {
        self.queue.iter().map(Queued::id).collect()
    }
}

impl Engine {
    /// Starts an invocation, or queues it behind the exclusive invocation running on its key.
    pub(crate) fn spawn(&self, inflight: Arc<Inflight>) {
        if inflight.left.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // Read before the lanes lock: a path that holds an invocation's state may take it.
        // A send being placed counts once its gate opens here ([`Self::count_placed_start`]).
        let first = (self.first_start(&inflight)).filter(|_| !inflight.placed_by_commit());
        inflight.engage(&self.held_input);
        if let Some(scope) = inflight.lane() {
            let mut lanes = self.lanes.lock().expect("lanes");
            // Claimed by a cancel or kill (which releases the key after marking it running),
            // or finished: it must not take or queue for the key now.
            // Queued already (a cancel restarting a copy its timer had started): once is enough.
            // Its partition left (a callee launched as it did): the key's lane went with it,
            // and a lane made now would hold the key when the partition comes back.
            if inflight.running.load(std::sync::atomic::Ordering::SeqCst)
                || inflight.finished.load(std::sync::atomic::Ordering::SeqCst)
                || inflight.queued.load(std::sync::atomic::Ordering::SeqCst)
                || inflight.left.load(std::sync::atomic::Ordering::SeqCst)
            {
                return;
            }
            self.count_start(first);
            let lane = lanes.entry(scope.clone()).or_default();
            if let Some(placement) = inflight.undecided_placement() {
                lane.placements.retain(|p| !p.settled());
                lane.placements.push(placement.clone());
            }
            if lane.running.is_some() {
                inflight
                    .queued
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                inflight.release_slot();
                lane.queue.push_back(Queued::Loaded(inflight));
                return;
            }
            lane.running = Some(inflight.id);
        } else if !inflight.running.load(std::sync::atomic::Ordering::SeqCst) {
            self.count_start(first);
        }
        self.start_task(inflight);
    }

    /// An invocation taken in from the inbox joined its key's queue: the sends queued there
    /// before it whose place is still being decided go behind it, through the inbox. It was
    /// accepted before (its message was in the inbox when it was taken in), and its message
    /// may leave the inbox before their commit reads it.
    pub(crate) fn overtake_placements(&self, inflight: &Inflight) {
        let Some(scope) = inflight.lane() else {
            return;
        };
        if let Some(lane) = self.lanes.lock().expect("lanes").get_mut(scope) {
            for placement in lane.placements.drain(..) {
                placement.overtake();
            }
        }
    }

    /// Whether starting `inflight` is its first start (no attempt yet: a resumption from a
    /// suspension, a timer or a restart after it ran is none), with its handler's label.
    fn first_start(&self, inflight: &Inflight) -> Option<Option<crate::metrics::HandlerLabel>> {
        let state = inflight.state();
        (state.record.attempts == 0).then(|| self.handler_label(&state.record.target))
    }

    /// Counts a first start, where it starts or queues on its key: a second spawn of one
    /// already queued or running is no new start.
    fn count_start(&self, first: Option<Option<crate::metrics::HandlerLabel>>) {
        let Some(label) = first else { return };
        self.metrics.started.inc();
        if let Some(label) = label {
            self.metrics.handler_started.get_or_create(&label).inc();
        }
    }

    /// Whether sends still being placed are queued on `scope`'s lane.
    pub(crate) fn placements_pending_on(&self, scope: &StateScope) -> bool {
        let lanes = self.lanes.lock().expect("lanes");
        lanes
            .get(scope)
            .is_some_and(|lane| lane.placements.iter().any(|p| !p.settled()))
    }

    /// How many sends being placed are queued on `scope`'s lane, and whether `id` is queued
    /// there (a test's view of an overtaking, on PostgreSQL).
    #[cfg(all(test, feature = "postgres"))]
    pub(crate) fn lane_view(&self, scope: &StateScope, id: &InvocationId) -> (usize, bool) {
        let lanes = self.lanes.lock().expect("lanes");
        lanes.get(scope).map_or((0, false), |lane| {
            let queued = lane.running == Some(*id) || lane.loaded().any(|i| i.id == *id);
            (lane.placements.len(), queued)
        })
    }

    /// Counts the start of a send its sender's commit placed here (not counted as it queued:
    /// it might have gone into the inbox, from where its copy is counted).
    pub(super) fn count_placed_start(&self, inflight: &Inflight) {
        self.count_start(self.first_start(inflight));
    }

    /// [`Self::start_task`] for one that holds its key already (resumed, or next on a key held
    /// on disk since a restart): counted if this is its first start.
    pub(crate) fn start_holder(&self, inflight: Arc<Inflight>) {
        if !inflight.running.load(std::sync::atomic::Ordering::SeqCst) {
            self.count_start(self.first_start(&inflight));
        }
        self.start_task(inflight);
    }

    /// Spawns the task that executes an invocation. It counts as running from here on, so a
    /// kill or cancel arriving before the task is first polled goes to the task, not around it.
    /// One already running or finished (a kill or a second start won the race) is left alone.
    pub(crate) fn start_task(&self, inflight: Arc<Inflight>) {
        use std::sync::atomic::Ordering::SeqCst;
        if inflight.finished.load(SeqCst) || inflight.running.swap(true, SeqCst) {
            return;
        }
        inflight.engage(&self.held_input);
        // Boxed: the task's future is then a pointer, not the ~2 KB state of `run`, which tokio
        // copied into its task cell and again over itself when the task ended.
        self.tasks
            .spawn(Box::pin(super::execute::run(self.clone(), inflight)));
    }

    /// The kind of a target's handler. One this binary does not serve (a deploy renamed or
    /// removed it) of an object it still serves counts as exclusive, an object's default: its
    /// invocations, paused for it, keep their key as they held it (found from outside: those
    /// queued behind one ran ahead of it, and its resume then wrote over their updates).
    fn handler_kind(&self, target: &Target) -> Option<HandlerKind> {
        match self.resolve(target) {
            Ok((_, handler)) => Some(handler.kind),
            Err(super::EngineError::UnknownHandler { .. }) if target.key.is_some() => self
                .registry()
                .get(&target.service)
                .filter(|service| service.definition.kind == ServiceKind::VirtualObject)
                .map(|_| HandlerKind::Exclusive),
            Err(_) => None,
        }
    }

    /// Whether the target's handler holds its key alone (exclusive, or a workflow's `run`).
    pub(crate) fn is_exclusive(&self, target: &Target) -> bool {
        matches!(
            self.handler_kind(target),
            Some(HandlerKind::Exclusive | HandlerKind::Workflow)
        )
    }

    /// The key a target must hold alone, if its handler is exclusive.
    pub(crate) fn exclusive_scope_of(&self, target: &Target) -> Option<StateScope> {
        self.is_exclusive(target).then(|| StateScope::of(target))
    }

    /// Makes `id` the invocation holding its key, at recovery: a suspended or paused exclusive
    /// invocation keeps its key across a restart, and those behind it queue. A runnable one
    /// that took the key first (it arrived earlier, but was delayed) runs right after it.
    pub(crate) fn hold_lane(&self, target: &Target, id: InvocationId) {
        if let Some(scope) = self.exclusive_scope_of(target) {
            let mut lanes = self.lanes.lock().expect("lanes");
            let lane = lanes.entry(scope).or_default();
            if let Some(first) = lane.running.replace(id) {
                lane.queue_stored(first, false);
            }
        }
    }

    /// The workflow key a target's `run` owns, if it is a workflow's `run`.
    pub(crate) fn workflow_scope_of(&self, target: &Target) -> Option<StateScope> {
        (self.handler_kind(target)? == HandlerKind::Workflow).then(|| StateScope::of(target))
    }

    /// Lets the next queued invocation of the key run. Called as soon as this one's completion
    /// is submitted, not when it is durable: the next one reads the key's state from the lane's
    /// overlay, and whatever it acknowledges commits after its predecessor (one writer, in
    /// order). An idle lane is dropped once everything written through it is durable.
    pub(crate) fn release(&self, inflight: &Inflight) {
        // Its partition left: its key's lane went with it (one there now is a later owner's).
        if inflight.left.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Some(scope) = inflight.lane().cloned() else {
            return;
        };
        self.pass_key_on(scope, inflight.id);
    }

    /// Gives `scope`'s key, held by `holder`, to the next in its queue. One waiting on disk
    /// is loaded with a slot of the wake from disk, as a timer's wake-up is, so that what runs
    /// from disk queues and waits in memory for its commit stays bounded (found from outside:
    /// after a restart, 72,935 completed invocations of 500 keys' queues waited for the
    /// writer at once, 916 MiB); with none free the key stays its until one is.
    fn pass_key_on(&self, scope: StateScope, mut holder: InvocationId) {
        loop {
            let next = {
                let mut lanes = self.lanes.lock().expect("lanes");
                let Some(lane) = lanes.get_mut(&scope) else {
                    return;
                };
                if lane.running != Some(holder) {
                    return;
                }
                let next = lane.pop();
                lane.running = next.as_ref().map(Queued::id);
                match next {
                    Some(Queued::Stored(id)) => Next::Stored(id),
                    Some(Queued::Loaded(next)) => {
                        next.queued
                            .store(false, std::sync::atomic::Ordering::SeqCst);
                        Next::Queued(next)
                    }
                    None => Next::Idle,
                }
            };
            match next {
                Next::Stored(id) => match self.timers.slots().try_take() {
                    Some(slot) => {
                        if self.start_stored(&scope, id, slot) {
                            return;
                        }
                        // One that finished on disk meanwhile (killed) passes the key on.
                        holder = id;
                    }
                    None => {
                        let engine = self.clone();
                        self.tasks.spawn(async move {
                            let Some(slot) = engine.timers.slots().take().await else {
                                return;
                            };
                            if !engine.start_stored(&scope, id, slot) {
                                engine.pass_key_on(scope, id);
                            }
                        });
                        return;
                    }
                },
                Next::Queued(next) => return self.start_task(next),
                Next::Idle => return self.drop_lane_when_durable(scope),
            }
        }
    }

    /// Queues an idle lane to be dropped once its writes are durable; one sweep task (and one
    /// barrier per round) serves every lane that goes idle, not a task and a barrier each.
    fn drop_lane_when_durable(&self, scope: StateScope) {
        let epoch = match self.lanes.lock().expect("lanes").get(&scope) {
            Some(lane) => lane.epoch,
            None => return,
        };
        let mut idle = self.idle_lanes.lock().expect("idle lanes");
        idle.candidates.push((scope, epoch));
        if !idle.sweeping {
            idle.sweeping = true;
            self.tasks.spawn(sweep_idle_lanes(self.clone()));
        }
    }

    /// A state entry as this key's exclusive invocations see it: written through the lane and
    /// maybe not durable yet. `None` when the lane knows nothing about it (read storage).
    pub(crate) fn lane_state(&self, scope: &StateScope, name: &str) -> Option<Option<Vec<u8>>> {
        let lanes = self.lanes.lock().expect("lanes");
        let overlay = &lanes.get(scope)?.overlay;
        match overlay.values.get(name) {
            Some(v) => Some(v.clone()),
            None if overlay.cleared_all => Some(None),
            None => None,
        }
    }

    /// Applies `f` to the state names read from storage, as the lane's writes change them.
    pub(crate) fn lane_state_keys(
        &self,
        scope: &StateScope,
        mut stored: Vec<String>,
    ) -> Vec<String> {
        let lanes = self.lanes.lock().expect("lanes");
        if let Some(overlay) = lanes.get(scope).map(|l| &l.overlay) {
            if overlay.cleared_all {
                stored.clear();
            }
            for (name, value) in &overlay.values {
                match value {
                    Some(_) if !stored.contains(name) => stored.push(name.clone()),
                    None => stored.retain(|k| k != name),
                    _ => {}
                }
            }
        }
        stored.sort();
        stored
    }

    /// Records a write of this key's exclusive invocation in the lane's overlay. One whose
    /// partition left (its task not yet at its next await point) writes nothing there: the
    /// key's lane went with the partition, and the store refuses the write anyway.
    pub(crate) fn lane_write(&self, writer: &Inflight, name: Option<&str>, value: Option<Vec<u8>>) {
        let mut lanes = self.lanes.lock().expect("lanes");
        // Under the lock the leave clears the lanes under: marked before, or cleared after.
        if writer.left.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let lane = lanes.entry(writer.scope.clone()).or_default();
        lane.epoch = self.lane_writes.fetch_add(1, Ordering::Relaxed) + 1;
        let overlay = &mut lane.overlay;
        match name {
            Some(name) => {
                overlay.values.insert(name.to_owned(), value);
            }
            None => {
                overlay.values.clear();
                overlay.cleared_all = true;
            }
        }
    }

    /// Takes a not-yet-started invocation out of its key's queue, in memory or on disk (cancel
    /// or kill before it ran).
    pub(crate) fn remove_queued(&self, inflight: &Inflight) {
        if let Some(scope) = inflight.lane()
            && let Some(lane) = self.lanes.lock().expect("lanes").get_mut(scope)
        {
            lane.remove(&inflight.id);
            inflight
                .queued
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
        if !inflight.running.load(std::sync::atomic::Ordering::SeqCst) {
            inflight.disengage();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::Journal;
    use crate::engine::tests::test_config;
    use crate::registry::Registry;
    use crate::storage::{InvocationRecord, RedbOptions, RedbStorage, Status};

    /// Queues `scope`'s lane as idle at `epoch` and runs the sweep's rounds until it is done.
    async fn swept(engine: &Engine, scope: &StateScope, epoch: u64) {
        {
            let mut idle = engine.idle_lanes.lock().unwrap();
            idle.candidates.push((scope.clone(), epoch));
            idle.sweeping = true;
        }
        tokio::time::timeout(Duration::from_secs(10), sweep_idle_lanes(engine.clone()))
            .await
            .expect("the sweep ends");
    }

    /// A key's lane went idle twice without a write in between (its second holder wrote
    /// nothing), and the sweep dropped it at the first: the second candidate, swept later,
    /// must not drop the key's next lane, whose writes its barrier does not cover (the next
    /// holder would read the key's state from the store before they are durable: a lost
    /// update). Each lane numbered its writes from one, so the later lane's first write
    /// matched the earlier lane's.
    #[tokio::test]
    async fn a_candidate_of_a_dropped_lane_does_not_drop_the_keys_next_lane() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap());
        let registry = Registry::assemble(Vec::new(), Default::default()).unwrap();
        let engine = Engine::start(storage, registry, test_config()).unwrap();
        let record = InvocationRecord::for_test("Tally", Some("k"), Status::Runnable);
        let id = InvocationId::random(4);
        let writer = engine.new_inflight(id, record, true, Journal::default());
        let scope = writer.scope.clone();
        let epoch = |engine: &Engine| engine.lanes.lock().unwrap().get(&scope).map(|l| l.epoch);

        engine.lane_write(&writer, Some("count"), Some(b"1".to_vec()));
        let first = epoch(&engine).expect("the write made the lane");
        swept(&engine, &scope, first).await;
        assert_eq!(epoch(&engine), None, "the idle lane is dropped");

        engine.lane_write(&writer, Some("count"), Some(b"2".to_vec()));
        swept(&engine, &scope, first).await;
        assert_eq!(
            engine.lane_state(&scope, "count"),
            Some(Some(b"2".to_vec())),
            "the later lane, with a write the stale candidate's barrier did not cover, stays"
        );
        engine.shutdown();
    }
}
