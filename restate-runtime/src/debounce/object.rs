//! `restate.Debouncer`: one key per debounced handler and key, holding its open burst (the
//! latest arrival, which will run; when the burst began and when it closes) and the closed
//! bursts whose chosen arrival has not said yet that it runs. Each other arrival is a state
//! entry of its own, so an arrival writes a constant amount however long the burst.
//!
//! A burst closes in two steps, so that a chosen arrival that is gone (cancelled or killed
//! as its burst closed) never leaves the others without a run: `fire` tells the latest
//! arrival to run; that one answers `started` as it goes on (the others are then told which
//! one ran for them), or its end sends `leave` instead (the latest of the others is told to
//! run in its place). One delayed `fire` per burst: early (the burst grew meanwhile), it sends
//! itself again for the new close. A key with nothing open or closing keeps no state.
//!
//! An arrival belongs to the burst open when it was accepted (its stamp), not when its gate
//! runs: one stamped after the open burst's close, while that burst waits for its `fire` (a
//! restart after downtime, an overload), begins the next burst, which takes the open one's
//! place once that closes.

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::Window;
use crate::context::{FromInvocation, InvocationContext, ObjectContext};
use crate::error::{HandlerError, always_retried};
use crate::ids::InvocationId;
use crate::registry::HandlerKind::Exclusive;
use crate::registry::{Service, ServiceDefinition, ServiceKind, internal_handler};

/// The object whose keys are bursts.
pub(crate) const DEBOUNCER: &str = "restate.Debouncer";
const BURSTS: &str = "bursts";
/// The state names of the arrivals that wait and were not chosen: `member/<arrival number>`
/// (zero-padded, so that names sort in arrival order).
const MEMBER: &str = "member/";

/// A key's bursts (a field added later takes `#[serde(default)]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Bursts {
    /// The debouncer's name, for metrics.
    pub name: String,
    /// The burst that takes arrivals.
    pub open: Option<Open>,
    /// Closed bursts whose chosen arrival was told to run and has not answered.
    pub closing: Vec<Closing>,
    /// The burst of the arrivals stamped after the open one's close, while that one has not
    /// closed yet: open once it closes.
    #[serde(default)]
    pub next: Option<Open>,
}

impl Bursts {
    /// The next burst takes arrivals once the open one is over.
    fn promote(&mut self) {
        if self.open.is_none() {
            self.open = self.next.take();
        }
    }
}

/// The burst that takes arrivals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Open {
    /// The arrival number of the one that opened it: its `fire` carries it (a `fire` of a
    /// burst that is over does nothing).
    pub id: u64,
    /// The latest arrival, which runs when the burst closes.
    pub leader: Arrived,
    /// When the burst began (ms since the epoch).
    pub first_ms: u64,
    /// When it closes (ms since the epoch): the latest arrival's period after it, capped by
    /// `max_wait` after the first.
    pub due_ms: u64,
    /// How many of its arrivals wait without being chosen.
    pub superseded: u64,
    /// Its `fire` came late (see [`SETTLE_MS`]) and was put off once for the arrivals a
    /// restart still replays.
    #[serde(default)]
    pub settled: bool,
}

/// A `fire` this much later than its burst's close (a restart after downtime, an overload)
/// is put off once by as much: an invocation accepted before the crash runs its gate only
/// now, and its arrival (stamped with its acceptance time) may belong to this burst.
const SETTLE_MS: u64 = 1_000;

/// A closed burst waiting for its chosen arrival to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Closing {
    pub id: u64,
    pub leader: Arrived,
}

/// One arrival waiting for its verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Arrived {
    pub invocation: InvocationId,
    /// Its arrival number: of two arrivals in one millisecond, the later runs.
    pub seq: u64,
    /// When it was accepted (ms since the epoch; a delayed send when it was sent): the latest
    /// runs. Across processes this, not the arrival number, tells the order (a forwarded
    /// invocation's number is the process's that took it in from the inbox). 0 in state
    /// written before it was recorded.
    #[serde(default)]
    pub at_ms: u64,
    /// What to resolve with its verdict.
    pub awakeable: String,
}

impl Arrived {
    /// Its place in arrival order.
    fn order(&self) -> (u64, u64) {
        (self.at_ms, self.seq)
    }
}

/// A waiting arrival that was not chosen, as stored: in which burst.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    burst: u64,
    arrived: Arrived,
}

fn member_name(seq: u64) -> String {
    format!("{MEMBER}{seq:020}")
}

/// An invocation arriving at a debounced handler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Arrival {
    pub name: String,
    pub arrived: Arrived,
    pub window: Window,
    /// When it arrived: accepted, or due for a delayed send (the accepting process's clock),
    /// whenever its gate ran.
    pub now_ms: u64,
}

/// The chosen arrival of burst `burst` goes on to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Started {
    pub burst: u64,
    pub invocation: InvocationId,
}

/// An invocation that ended before its verdict, or chosen but before it started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Leave {
    pub invocation: InvocationId,
    pub seq: u64,
}

/// What a closed burst tells each of its arrivals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    /// Run the handler (and say so with `started`): this is burst `burst`'s latest arrival.
    Run { burst: u64 },
    /// Do not run: `by` runs in this one's place.
    Superseded { by: InvocationId },
}

impl Window {
    /// When a burst that began at `first_ms` closes after an arrival at `now_ms`.
    fn close(&self, first_ms: u64, now_ms: u64) -> u64 {
        let quiet = now_ms.saturating_add(self.period_ms);
        match self.max_wait_ms {
            Some(max) => quiet.min(first_ms.saturating_add(max)),
            None => quiet,
        }
    }
}

/// Sends this key's `fire` of burst `id` for `at_ms`.
fn arm(ctx: &InvocationContext, id: u64, at_ms: u64) {
    let key = ctx.key.as_deref();
    let delay = at_ms.saturating_sub(ctx.engine.now_ms());
    let fire = crate::client::parts(DEBOUNCER, key, "fire", crate::codec::encode_json(&id));
    ctx.send(fire, Some(std::time::Duration::from_millis(delay)));
}

/// Stores the bursts (the next one open if the open one is over), or nothing when none is
/// open or closing.
fn save(object: &ObjectContext<'_>, mut bursts: Bursts) {
    bursts.promote();
    if bursts.open.is_none() && bursts.closing.is_empty() {
        object.clear_all();
    } else {
        object.set(BURSTS, bursts);
    }
}

async fn arrive(ctx: &InvocationContext, arrival: Arrival) -> Result<(), HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let mut bursts = object.get::<Bursts>(BURSTS).await?.unwrap_or_default();
    let Arrival {
        name,
        arrived,
        window,
        now_ms,
    } = arrival;
    bursts.name = name;
    // Stamped after the open burst's close, or no earlier than the next burst began (a late
    // gate of the open one may have moved its close past that): of the burst after it.
    let later = bursts
        .open
        .as_ref()
        .is_some_and(|open| now_ms > open.due_ms)
        || bursts
            .next
            .as_ref()
            .is_some_and(|next| now_ms >= next.first_ms);
    let slot = match later {
        true => &mut bursts.next,
        false => &mut bursts.open,
    };
    *slot = Some(match slot.take() {
        None => {
            let due_ms = window.close(now_ms, now_ms);
            arm(ctx, arrived.seq, due_ms);
            Open {
                id: arrived.seq,
                leader: arrived,
                first_ms: now_ms,
                due_ms,
                superseded: 0,
                settled: false,
            }
        }
        Some(mut open) => {
            // The latest by arrival order runs: one that arrived first but got here later
            // (its gate ran later) waits unchosen at once.
            let passed = if arrived.order() > open.leader.order() {
                std::mem::replace(&mut open.leader, arrived)
            } else {
                arrived
            };
            let member = Member {
                burst: open.id,
                arrived: passed,
            };
            object.set(&member_name(member.arrived.seq), member);
            open.superseded += 1;
            // Never earlier than planned: the armed `fire` is at or before the close.
            open.due_ms = open.due_ms.max(window.close(open.first_ms, now_ms));
            open
        }
    });
    save(&object, bursts);
    Ok(())
}

async fn fire(ctx: &InvocationContext, id: u64) -> Result<(), HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(mut bursts) = object.get::<Bursts>(BURSTS).await? else {
        return Ok(());
    };
    let is_this = |burst: &Option<Open>| burst.as_ref().is_some_and(|burst| burst.id == id);
    if !is_this(&bursts.open) && !is_this(&bursts.next) {
        return Ok(());
    }
    let now = object
        .now()
        .await?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Some(next) = bursts.next.as_ref().filter(|next| next.id == id) {
        // Due before the burst ahead of it closed (that one put off for its settle): again
        // once that one has.
        arm(ctx, id, next.due_ms.max(now + SETTLE_MS));
        return Ok(());
    }
    let Some(mut open) = bursts.open.take_if(|open| open.id == id) else {
        return Ok(());
    };
    if open.due_ms > now {
        arm(ctx, id, open.due_ms);
        return Ok(());
    }
    if !open.settled && now - open.due_ms > SETTLE_MS {
        open.settled = true;
        arm(ctx, id, now + SETTLE_MS);
        bursts.open = Some(open);
        save(&object, bursts);
        return Ok(());
    }
    verdict(ctx, &open.leader.awakeable, &Verdict::Run { burst: id })?;
    bursts.closing.push(Closing {
        id,
        leader: open.leader,
    });
    save(&object, bursts);
    Ok(())
}

/// The members of burst `burst`, latest first.
async fn members(object: &ObjectContext<'_>, burst: u64) -> Result<Vec<Member>, HandlerError> {
    let mut members = Vec::new();
    for name in object.state_keys().await?.iter().rev() {
        if name.starts_with(MEMBER)
            && let Some(member) = object.get::<Member>(name).await?
            && member.burst == burst
        {
            members.push(member);
        }
    }
    members.sort_by_key(|m| std::cmp::Reverse(m.arrived.order()));
    Ok(members)
}

async fn started(ctx: &InvocationContext, started: Started) -> Result<(), HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(mut bursts) = object.get::<Bursts>(BURSTS).await? else {
        return Ok(());
    };
    let Some(at) = bursts
        .closing
        .iter()
        .position(|c| c.id == started.burst && c.leader.invocation == started.invocation)
    else {
        return Ok(());
    };
    bursts.closing.remove(at);
    let by = started.invocation;
    let members = members(&object, started.burst).await?;
    for member in &members {
        verdict(ctx, &member.arrived.awakeable, &Verdict::Superseded { by })?;
        object.clear(&member_name(member.arrived.seq));
    }
    count(ctx, &bursts.name, "run", 1);
    count(ctx, &bursts.name, "superseded", members.len() as u64);
    save(&object, bursts);
    Ok(())
}

async fn leave(ctx: &InvocationContext, leave: Leave) -> Result<(), HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(mut bursts) = object.get::<Bursts>(BURSTS).await? else {
        return Ok(());
    };
    let name = member_name(leave.seq);
    if let Some(member) = object.get::<Member>(&name).await?
        && member.arrived.invocation == leave.invocation
    {
        object.clear(&name);
        let of_member = |o: &&mut Open| o.id == member.burst;
        if let Some(open) = bursts.open.as_mut().filter(of_member) {
            open.superseded = open.superseded.saturating_sub(1);
        } else if let Some(next) = bursts.next.as_mut().filter(of_member) {
            next.superseded = next.superseded.saturating_sub(1);
        }
    } else if let Some(slot) = [&mut bursts.open, &mut bursts.next]
        .into_iter()
        .find(|slot| {
            slot.as_ref()
                .is_some_and(|o| o.leader.invocation == leave.invocation)
        })
    {
        // The latest of the others will run in its place; with none left the burst is over
        // (its `fire` then finds no burst of its number).
        let mut open = slot.take().expect("found with its leader");
        if let Some(next) = members(&object, open.id).await?.into_iter().next() {
            object.clear(&member_name(next.arrived.seq));
            open.superseded = open.superseded.saturating_sub(1);
            open.leader = next.arrived;
            *slot = Some(open);
        }
    } else if let Some(at) = bursts
        .closing
        .iter()
        .position(|c| c.leader.invocation == leave.invocation)
    {
        // Told to run, gone before it started: the latest of the others runs instead.
        let id = bursts.closing[at].id;
        match members(&object, id).await?.into_iter().next() {
            Some(next) => {
                object.clear(&member_name(next.arrived.seq));
                verdict(ctx, &next.arrived.awakeable, &Verdict::Run { burst: id })?;
                bursts.closing[at].leader = next.arrived;
            }
            None => {
                bursts.closing.remove(at);
            }
        }
    } else {
        // Not waiting here (its verdict was on its way): nothing changes.
        return Ok(());
    }
    save(&object, bursts);
    Ok(())
}

/// Tells an arrival its verdict: its awakeable, resolved in this invocation's journal (the
/// arrival's wake-up commits with it).
fn verdict(
    ctx: &InvocationContext,
    awakeable: &str,
    verdict: &Verdict,
) -> Result<(), HandlerError> {
    Ok(ctx.complete_awakeable(awakeable, crate::context::resolved(verdict))?)
}

fn count(ctx: &InvocationContext, name: &str, verdict: &'static str, n: u64) {
    let label = crate::metrics::DebounceLabel {
        debouncer: name.into(),
        verdict,
    };
    ctx.engine
        .metrics()
        .debounced
        .get_or_create(&label)
        .inc_by(n);
}

/// The bursts of key `key` as stored (no invocation: the admin API's read).
pub(crate) fn stored(
    engine: &crate::engine::Engine,
    key: &str,
) -> Result<Bursts, crate::storage::StorageError> {
    Ok(engine
        .object_state(DEBOUNCER, key, BURSTS)?
        .unwrap_or_default())
}

/// `restate.Debouncer`.
pub(crate) struct DebouncerObject;

impl Service for DebouncerObject {
    fn definition() -> ServiceDefinition {
        ServiceDefinition {
            name: DEBOUNCER,
            kind: ServiceKind::VirtualObject,
            handlers: vec![
                internal_handler("arrive", Exclusive, Some("Arrival"), "()"),
                internal_handler("fire", Exclusive, Some("u64"), "()"),
                internal_handler("started", Exclusive, Some("Started"), "()"),
                internal_handler("leave", Exclusive, Some("Leave"), "()"),
            ],
        }
    }

    fn invoke<'a>(
        &'a self,
        name: &'a str,
        ctx: &'a InvocationContext,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, HandlerError>> {
        use crate::__private::{input, output, unknown_handler};
        Box::pin(async move {
            always_retried(
                async {
                    match name {
                        "arrive" => {
                            output(arrive(ctx, input::<Arrival>().decode(&bytes, ctx)?).await)
                        }
                        "fire" => output(fire(ctx, input::<u64>().decode(&bytes, ctx)?).await),
                        "started" => {
                            output(started(ctx, input::<Started>().decode(&bytes, ctx)?).await)
                        }
                        "leave" => output(leave(ctx, input::<Leave>().decode(&bytes, ctx)?).await),
                        other => Err(unknown_handler(DEBOUNCER, other)),
                    }
                }
                .await,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_closes_a_period_after_its_latest_arrival_and_max_wait_after_its_first() {
        let window = Window {
            period_ms: 30_000,
            max_wait_ms: Some(300_000),
        };
        assert_eq!(window.close(0, 0), 30_000);
        assert_eq!(window.close(0, 100_000), 130_000);
        assert_eq!(window.close(0, 290_000), 300_000);
        let unbounded = Window {
            max_wait_ms: None,
            ..window
        };
        assert_eq!(unbounded.close(0, 290_000), 320_000);
    }

    #[test]
    fn member_names_sort_in_arrival_order() {
        assert!(member_name(9) < member_name(10));
        assert!(member_name(10).starts_with(MEMBER));
    }
}
