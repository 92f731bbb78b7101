//! Request bodies on their way in. Each is read whole before its request takes a slot in
//! flight, so a client trickling a body, or an HTTP/2 stream that sends none, holds a
//! connection, not a slot. What is read is charged to its connection's own allowance
//! ([`OWN_BYTES`]), then to the listener's budget, and given back with the request's slot:
//! once answered, or once a call only waits (its input stored, and bounded from then on by
//! `RESTATE_MAX_INVOCATION_BYTES`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ingress::ApiError;

/// Bytes of bodies being read that each connection holds without taking them from the
/// listener's budget: a small body (a signed event, most calls' input) never waits on the
/// budget, which senders stalling near-limit bodies could spend; what these hold is bounded
/// by the connection cap instead. Shared by the streams of an HTTP/2 connection.
pub(super) const OWN_BYTES: usize = 8 * 1024;

/// The most bytes of bodies being read that a listener holds at once beyond its
/// connections' own, unless one body may be larger: the in-flight cap times the body limit
/// (1.25 GiB by default on the ingress) is not what a listener should buffer for clients
/// that may never finish their bodies.
const MAX_BUDGET: usize = 64 * 1024 * 1024;

/// Bytes read between two charges: charging each frame would cost more than reading it when
/// frames are tiny.
const CHARGED_BY: usize = 1024;

/// Frames smaller than this are copied out of the connection's read buffer: kept as they
/// are, one byte would hold the whole buffer it came in.
const COPIED_BELOW: usize = 4 * 1024;

/// One listener's reading ahead: its budget, its body limit and timeout, and the gauge of
/// the bodies still arriving.
pub(super) struct ReadAhead {
    budget: Arc<Semaphore>,
    max_bytes: usize,
    timeout: Duration,
    arriving: Gauge,
}

/// Who sends a body: a stranger (a request without the listener's token, to a route that
/// reads bodies without one) gets no share of the budget, only its connection's own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sender {
    Known,
    Stranger,
}

/// Why a body read ahead is refused.
pub(super) enum Refused {
    Body(BodyError),
    /// The budget is spent: the rest of the body is left to drain, until the body's own
    /// deadline.
    Budget(Body, tokio::time::Instant),
}

impl ReadAhead {
    /// Reading ahead bodies of at most `max_bytes` within `timeout`, with a budget of the
    /// bodies `in_flight` requests could hold, at most [`MAX_BUDGET`] unless one body may be
    /// larger.
    pub(super) fn new(
        in_flight: usize,
        max_bytes: usize,
        timeout: Duration,
        arriving: Gauge,
    ) -> Self {
        let budget = in_flight
            .saturating_mul(max_bytes)
            .min(MAX_BUDGET)
            .max(max_bytes)
            .min(Semaphore::MAX_PERMITS);
        Self {
            budget: Arc::new(Semaphore::new(budget)),
            max_bytes,
            timeout,
            arriving,
        }
    }

    /// The most a body from `whom` may hold.
    pub(super) fn limit(&self, whom: Sender) -> usize {
        match whom {
            Sender::Known => self.max_bytes,
            Sender::Stranger => self.max_bytes.min(OWN_BYTES),
        }
    }

    /// Reads `body` whole, charging its bytes to `own` (its connection's allowance), then to
    /// the budget (never a stranger's); with the budget spent it is refused with what is left
    /// of it. A body that has arrived (most do, with their head) is taken as it is, with no
    /// timer. Charges are taken a kibibyte at a time, not per frame.
    pub(super) async fn read(
        &self,
        mut body: Body,
        own: &Arc<Semaphore>,
        whom: Sender,
    ) -> Result<(Body, Charge), Refused> {
        use futures::FutureExt as _;
        use hyper::body::Body as _;
        if body.is_end_stream() {
            return Ok((body, Charge::default()));
        }
        let limit = self.limit(whom);
        if declared_over(&body, limit) {
            return Err(Refused::Body(BodyError::TooLarge));
        }
        let budget = match whom {
            Sender::Known => Some(&self.budget),
            Sender::Stranger => None,
        };
        let mut charge = Charge::default();
        let mut uncharged = 0;
        let mut read = Gathered::default();
        // Armed once a frame is not there yet, and kept until the body is read.
        let mut waiting: Option<(Pin<Box<tokio::time::Sleep>>, Arriving)> = None;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    let (timer, _) = waiting.get_or_insert_with(|| {
                        let timer = Box::pin(tokio::time::sleep_until(deadline));
                        (timer, Arriving::new(&self.arriving))
                    });
                    tokio::select! {
                        frame = body.frame() => frame,
                        () = timer.as_mut() => return Err(Refused::Body(BodyError::TimedOut)),
                    }
                }
            };
            let data = match frame {
                None if charge.take(uncharged, own, budget) => break,
                None => return Err(Refused::Budget(body, deadline)),
                Some(Err(e)) => return Err(Refused::Body(BodyError::Unreadable(e.to_string()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            if read.len() + data.len() > limit {
                return Err(Refused::Body(BodyError::TooLarge));
            }
            uncharged += data.len();
            read.push(data);
            if uncharged >= CHARGED_BY {
                if !charge.take(uncharged, own, budget) {
                    return Err(Refused::Budget(body, deadline));
                }
                uncharged = 0;
            }
        }
        Ok((Body::from(read.into_bytes()), charge))
    }
}

/// The bytes a body read ahead holds, from its connection's allowance and from the budget,
/// until dropped.
#[derive(Default)]
pub(super) struct Charge {
    own: Option<OwnedSemaphorePermit>,
    budget: Option<OwnedSemaphorePermit>,
}

impl Charge {
    /// Takes `bytes` more, from `own` as far as it goes, the rest from `budget`; `false`
    /// when the budget (if any) has not enough.
    fn take(
        &mut self,
        bytes: usize,
        own: &Arc<Semaphore>,
        budget: Option<&Arc<Semaphore>>,
    ) -> bool {
        let mut rest = bytes;
        // Another stream of the connection may take some between the look and the take:
        // look again, so that what is left of the allowance is used before the budget.
        loop {
            let from_own = rest.min(own.available_permits());
            if from_own == 0 {
                break;
            }
            if let Ok(permit) = own.clone().try_acquire_many_owned(from_own as u32) {
                merge(&mut self.own, permit);
                rest -= from_own;
                break;
            }
        }
        if rest == 0 {
            return true;
        }
        let Some(budget) = budget else {
            return false;
        };
        let Ok(permit) = budget
            .clone()
            .try_acquire_many_owned(u32::try_from(rest).unwrap_or(u32::MAX))
        else {
            return false;
        };
        merge(&mut self.budget, permit);
        true
    }
}

fn merge(held: &mut Option<OwnedSemaphorePermit>, more: OwnedSemaphorePermit) {
    match held {
        Some(held) => held.merge(more),
        None => *held = Some(more),
    }
}

/// A body's frames as they arrive: large ones kept as they came and joined once whole,
/// small ones appended to one buffer of their own (which grows by doubling, so holds up to
/// twice their bytes). Kept apart, each small frame would cost far more than its bytes (a body
/// sent in one-byte chunks, found from outside, took 60 times its size) and pin the
/// connection's read buffer it came in.
#[derive(Default)]
struct Gathered {
    frames: Vec<Bytes>,
    small: BytesMut,
    len: usize,
}

impl Gathered {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, data: Bytes) {
        self.len += data.len();
        if data.len() < COPIED_BELOW {
            self.small.extend_from_slice(&data);
            return;
        }
        if !self.small.is_empty() {
            self.frames.push(self.small.split().freeze());
        }
        self.frames.push(data);
    }

    fn into_bytes(mut self) -> Bytes {
        if !self.small.is_empty() {
            self.frames.push(self.small.freeze());
        }
        if self.frames.len() <= 1 {
            return self.frames.pop().unwrap_or_default();
        }
        let mut whole = BytesMut::with_capacity(self.len);
        for frame in self.frames {
            whole.extend_from_slice(&frame);
        }
        whole.freeze()
    }
}

/// A body still arriving, counted in its listener's gauge until dropped.
struct Arriving(Gauge);

impl Arriving {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A body read whole within `timeout` and up to `limit` bytes.
pub(crate) async fn read_body_within(
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    use futures::FutureExt as _;
    if declared_over(&body, limit) {
        return Err(BodyError::TooLarge);
    }
    let read = axum::body::to_bytes(body, limit);
    tokio::pin!(read);
    // A small body usually arrived with its head and is read at once: no timer to arm.
    let read = match read.as_mut().now_or_never() {
        Some(read) => read,
        None => tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| BodyError::TimedOut)?,
    };
    read.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            BodyError::TooLarge
        } else {
            BodyError::Unreadable(inner.to_string())
        }
    })
}

/// Whether the body's declared length is over `limit`: refused before any of it is read (nor
/// a `100 Continue` sent for it).
fn declared_over(body: &Body, limit: usize) -> bool {
    hyper::body::Body::size_hint(body).lower() > limit as u64
}

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    TimedOut,
    TooLarge,
    Unreadable(String),
}

impl BodyError {
    /// Its label in the `requests_rejected` metric.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            BodyError::TimedOut => "body_timeout",
            BodyError::TooLarge => "body_too_large",
            BodyError::Unreadable(_) => "body_unreadable",
        }
    }

    /// The answer: more than `limit` bytes is a `413`, slower than `timeout` a `408`.
    pub(crate) fn api_error(self, limit: usize, timeout: Duration) -> ApiError {
        match self {
            BodyError::TooLarge => ApiError::ingress(
                413,
                format!("request body exceeds the limit of {limit} bytes"),
            ),
            BodyError::TimedOut => ApiError::ingress(
                408,
                format!("request body did not arrive within {timeout:?}"),
            ),
            BodyError::Unreadable(reason) => {
                ApiError::ingress(400, format!("cannot read request body: {reason}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use bytes::Bytes;
    use prometheus_client::metrics::gauge::Gauge;
    use tokio::sync::Semaphore;

    use super::{BodyError, COPIED_BELOW, Gathered, OWN_BYTES, ReadAhead, Refused, Sender};

    const KIB: usize = 1024;

    /// A body that comes in `chunks` of `size` bytes, numbered so that order shows.
    fn body_of(chunks: usize, size: usize) -> (Body, Vec<u8>) {
        let frames: Vec<Bytes> = (0..chunks)
            .map(|i| Bytes::from(vec![i as u8; size]))
            .collect();
        let whole = frames.concat();
        let stream = futures::stream::iter(frames.into_iter().map(Ok::<_, Infallible>));
        (Body::from_stream(stream), whole)
    }

    fn reading(in_flight: usize, max_bytes: usize) -> (ReadAhead, Gauge) {
        let arriving = Gauge::default();
        let read = ReadAhead::new(
            in_flight,
            max_bytes,
            Duration::from_secs(5),
            arriving.clone(),
        );
        (read, arriving)
    }

    #[tokio::test]
    async fn a_body_holds_its_bytes_until_its_charge_is_dropped() {
        let (read, _) = reading(2, 64 * KIB);
        let budget = read.budget.available_permits();
        assert_eq!(budget, 128 * KIB);
        let own = Arc::new(Semaphore::new(OWN_BYTES));
        // 40 KiB in frames of 10 (small ones too: 1 byte, then 3).
        let (body, whole) = body_of(4, 10 * KIB);
        let (body, charge) = read.read(body, &own, Sender::Known).await.ok().unwrap();
        assert_eq!(own.available_permits(), 0, "the connection's own first");
        assert_eq!(
            read.budget.available_permits(),
            budget - (40 * KIB - OWN_BYTES)
        );
        let taken = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(taken, whole, "in order, whole");
        assert_eq!(
            read.budget.available_permits(),
            budget - (40 * KIB - OWN_BYTES),
            "held"
        );
        drop(charge);
        assert_eq!(
            own.available_permits(),
            OWN_BYTES,
            "given back with the charge"
        );
        assert_eq!(read.budget.available_permits(), budget);
        for (chunks, size) in [(1, 1), (3, 1), (1, 100 * KIB / 2)] {
            let (body, whole) = body_of(chunks, size);
            let (body, _) = read.read(body, &own, Sender::Known).await.ok().unwrap();
            assert_eq!(axum::body::to_bytes(body, usize::MAX).await.unwrap(), whole);
        }
        assert_eq!(read.budget.available_permits(), budget, "nothing kept");
    }

    #[tokio::test]
    async fn streams_of_one_connection_share_its_allowance_and_a_spent_budget_refuses() {
        let (read, _) = reading(1, 64 * KIB);
        let own = Arc::new(Semaphore::new(OWN_BYTES));
        // Two streams of one connection: the first takes the connection's allowance, the
        // second is charged to the budget whole.
        let (first, _) = body_of(2, 10 * KIB);
        let first = read.read(first, &own, Sender::Known).await.ok().unwrap().1;
        let (second, _) = body_of(2, 10 * KIB);
        let second = read.read(second, &own, Sender::Known).await.ok().unwrap().1;
        assert_eq!(own.available_permits(), 0);
        let left = 64 * KIB - (40 * KIB - OWN_BYTES);
        assert_eq!(read.budget.available_permits(), left);
        // 63 KiB on another connection: more beyond its own than the budget has left.
        let other = Arc::new(Semaphore::new(OWN_BYTES));
        let (third, _) = body_of(7, 9 * KIB);
        assert!(matches!(
            read.read(third, &other, Sender::Known).await,
            Err(Refused::Budget(..))
        ));
        assert_eq!(
            other.available_permits(),
            OWN_BYTES,
            "a refusal keeps nothing"
        );
        assert_eq!(read.budget.available_permits(), left);
        drop((first, second));
        assert_eq!(
            read.budget.available_permits(),
            64 * KIB,
            "dropped unread: given back"
        );
        assert_eq!(own.available_permits(), OWN_BYTES);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_or_too_slow_is_refused_and_counted_while_it_arrives() {
        let (read, arriving) = reading(4, 16 * KIB);
        let own = Arc::new(Semaphore::new(OWN_BYTES));
        let (large, _) = body_of(3, 8 * KIB);
        assert!(matches!(
            read.read(large, &own, Sender::Known).await,
            Err(Refused::Body(BodyError::TooLarge))
        ));
        let slow = ReadAhead::new(4, 16 * KIB, Duration::from_millis(50), arriving.clone());
        let never = Body::from_stream(futures::stream::pending::<Result<Bytes, Infallible>>());
        let reading = slow.read(never, &own, Sender::Known);
        tokio::pin!(reading);
        assert!(futures::FutureExt::now_or_never(reading.as_mut()).is_none());
        assert_eq!(arriving.get(), 1, "counted while it arrives");
        assert!(matches!(
            reading.await,
            Err(Refused::Body(BodyError::TimedOut))
        ));
        assert_eq!(arriving.get(), 0);
        assert_eq!(own.available_permits(), OWN_BYTES);
    }

    #[test]
    fn tiny_frames_are_gathered_into_one_buffer_and_joined_exactly() {
        let mut gathered = Gathered::default();
        let mut whole = Vec::new();
        for i in 0..10_000u32 {
            let byte = (i % 251) as u8;
            gathered.push(Bytes::from(vec![byte]));
            whole.push(byte);
        }
        // One large frame between small ones keeps its place.
        let large = Bytes::from(vec![7u8; COPIED_BELOW]);
        gathered.push(large.clone());
        whole.extend_from_slice(&large);
        gathered.push(Bytes::from_static(b"end"));
        whole.extend_from_slice(b"end");
        // Ten thousand one-byte frames are one buffer, not ten thousand allocations.
        assert_eq!(gathered.frames.len(), 2);
        assert!(gathered.frames[0].len() == 10_000 && gathered.small.len() == 3);
        assert_eq!(gathered.into_bytes(), whole);
    }

    #[tokio::test]
    async fn a_strangers_body_gets_its_connections_own_bytes_and_no_budget() {
        let (read, _) = reading(4, 64 * KIB);
        let own = Arc::new(Semaphore::new(OWN_BYTES));
        let (small, whole) = body_of(2, 2 * KIB);
        let (body, charge) = read.read(small, &own, Sender::Stranger).await.ok().unwrap();
        assert_eq!(axum::body::to_bytes(body, usize::MAX).await.unwrap(), whole);
        assert_eq!(
            read.budget.available_permits(),
            256 * KIB,
            "no budget taken"
        );
        // A second stream of the connection, past what is left of its own: refused.
        let (more, _) = body_of(2, OWN_BYTES / 2);
        assert!(matches!(
            read.read(more, &own, Sender::Stranger).await,
            Err(Refused::Budget(..))
        ));
        drop(charge);
        // Over the connection's own bytes in all: too large for a stranger.
        let (large, _) = body_of(3, OWN_BYTES / 2);
        assert!(matches!(
            read.read(large, &own, Sender::Stranger).await,
            Err(Refused::Body(BodyError::TooLarge))
        ));
        assert_eq!(read.limit(Sender::Stranger), OWN_BYTES);
        assert_eq!(own.available_permits(), OWN_BYTES);
    }
}
