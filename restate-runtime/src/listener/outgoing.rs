//! Responses on their way out: what clients have not taken yet is bounded in bytes and in
//! time. A response body larger than a chunk takes its bytes from the listener's budget until
//! it is sent, and goes out in copies of a chunk each, so that a connection's buffers hold
//! about a chunk of it and the rest is given back once sent. A [`Rereadable`] response (an
//! attach, an output) that finds the budget spent is answered `429`: it loses nothing, it can
//! be asked for again. Any other, a call whose invocation has run, is answered all the same,
//! holding its in-flight slot if it still has one. A body no client takes for the body
//! timeout closes its connection ([`stalled`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Buf as _, Bytes};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::admission::HeldSlot;

/// Bodies up to this size go out as they are; larger ones in copies of this size.
const CHUNK: usize = 16 * 1024;

/// In a response's extensions: it can be asked for again at no cost (an attach, an output),
/// so it is refused rather than held over the budget.
#[derive(Clone, Copy)]
pub(crate) struct Rereadable;

/// One listener's budget of response bytes not yet sent, and its size.
pub(super) struct Budget(Arc<Semaphore>, u32);

impl Budget {
    pub(super) fn new(bytes: usize) -> Self {
        let bytes = bytes.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        Self(Arc::new(Semaphore::new(bytes)), bytes as u32)
    }
}

/// `response`, its body metered when larger than a chunk; `None` when it is [`Rereadable`]
/// and over the budget, to be refused. `slot` is its request's in-flight slot, if it holds
/// one.
pub(super) fn metered(
    response: Response,
    slot: Option<HeldSlot>,
    budget: &Budget,
    sending: &Arc<Sending>,
) -> Option<Response> {
    let size = match response.body().size_hint().exact() {
        Some(size) if size > CHUNK as u64 => size,
        _ => return Some(response),
    };
    // A body larger than the whole budget takes all of it, once it is free.
    let bytes = u32::try_from(size).unwrap_or(u32::MAX).min(budget.1);
    let (permit, slot) = match budget.0.clone().try_acquire_many_owned(bytes) {
        Ok(permit) => (Some(permit), None),
        Err(_) if response.extensions().get::<Rereadable>().is_some() => return None,
        // Over the budget, answered all the same: counted by its slot until sent.
        Err(_) => (None, slot.filter(HeldSlot::holds)),
    };
    let (parts, body) = response.into_parts();
    let body = Metered {
        inner: body,
        rest: Bytes::new(),
        _permit: permit,
        _slot: slot,
        sent: sending.start(),
    };
    Some(Response::from_parts(parts, Body::new(body)))
}

/// A response body going out in copies of a chunk, holding its share of the budget (or its
/// slot) until it is dropped: sent, or its connection closed.
struct Metered {
    inner: Body,
    /// What is left of the inner body's current frame.
    rest: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
    _slot: Option<HeldSlot>,
    sent: Sent,
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.len() <= CHUNK => {
                        this.sent.moved();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(data) => this.rest = data,
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                ended => return Poll::Ready(ended),
            }
        }
        // A copy: a slice would keep the whole frame alive until its last chunk is sent.
        let n = this.rest.len().min(CHUNK);
        let chunk = Bytes::copy_from_slice(&this.rest[..n]);
        this.rest.advance(n);
        if this.rest.is_empty() {
            this.rest = Bytes::new();
        }
        this.sent.moved();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// The metered bodies one connection is sending, each with when it last moved.
#[derive(Default)]
pub(super) struct Sending {
    next: AtomicU64,
    bodies: Mutex<Vec<(u64, Instant)>>,
    started: Notify,
}

impl Sending {
    fn start(self: &Arc<Self>) -> Sent {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.bodies
            .lock()
            .expect("sending lock")
            .push((id, Instant::now()));
        self.started.notify_one();
        Sent {
            sending: self.clone(),
            id,
        }
    }

    /// How long the body that moved least recently has not moved (`None`: none is sent).
    fn longest_still(&self) -> Option<Duration> {
        let bodies = self.bodies.lock().expect("sending lock");
        bodies.iter().map(|(_, at)| at.elapsed()).max()
    }
}

/// One metered body of a connection, registered until dropped.
struct Sent {
    sending: Arc<Sending>,
    id: u64,
}

impl Sent {
    fn moved(&self) {
        let mut bodies = self.sending.bodies.lock().expect("sending lock");
        if let Some(body) = bodies.iter_mut().find(|(id, _)| *id == self.id) {
            body.1 = Instant::now();
        }
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        let mut bodies = self.sending.bodies.lock().expect("sending lock");
        bodies.retain(|(id, _)| *id != self.id);
    }
}

/// Resolves once a body of the connection has not moved for `timeout`: its client takes
/// nothing (a reader that never reads, an HTTP/2 window left at zero), and the connection is
/// closed, which gives back what its bodies hold.
pub(super) async fn stalled(sending: &Sending, timeout: Duration) {
    let every = (timeout / 4).max(Duration::from_millis(10));
    loop {
        let started = sending.started.notified();
        match sending.longest_still() {
            None => started.await,
            Some(still) if still >= timeout => return,
            Some(_) => tokio::time::sleep(every).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn response(bytes: usize) -> Response {
        let mut response = Response::new(Body::from(vec![7u8; bytes]));
        response.extensions_mut().insert(Rereadable);
        response
    }

    #[tokio::test]
    async fn a_large_body_goes_out_whole_in_chunks_and_gives_its_bytes_back_once_sent() {
        let budget = Budget::new(1 << 20);
        let sending = Arc::<Sending>::default();
        let size = 5 * CHUNK + 3;
        let mut body = metered(response(size), None, &budget, &sending)
            .expect("within the budget")
            .into_body();
        assert_eq!(budget.0.available_permits(), (1 << 20) - size);
        assert_eq!(body.size_hint().exact(), Some(size as u64));
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= CHUNK);
            got.extend_from_slice(&data);
        }
        assert_eq!(got, vec![7u8; size]);
        assert!(sending.longest_still().is_some(), "sent until dropped");
        drop(body);
        assert_eq!(budget.0.available_permits(), 1 << 20);
        assert!(sending.longest_still().is_none());
    }

    #[tokio::test]
    async fn a_rereadable_body_over_the_budget_is_refused_and_a_small_one_is_not_metered() {
        let budget = Budget::new(3 * CHUNK);
        let sending = Arc::<Sending>::default();
        let held = metered(response(2 * CHUNK), None, &budget, &sending).unwrap();
        assert!(metered(response(2 * CHUNK), None, &budget, &sending).is_none());
        let small = metered(response(CHUNK), None, &budget, &sending).unwrap();
        assert_eq!(
            budget.0.available_permits(),
            CHUNK,
            "a chunk is not metered"
        );
        // Not rereadable (an invocation's result): answered over the budget.
        let call = Response::new(Body::from(vec![7u8; 2 * CHUNK]));
        assert!(metered(call, None, &budget, &sending).is_some());
        drop((held, small));
        assert_eq!(budget.0.available_permits(), 3 * CHUNK);
        // Larger than the whole budget: it takes all of it.
        let whole = metered(response(4 * CHUNK), None, &budget, &sending);
        assert!(whole.is_some());
        assert_eq!(budget.0.available_permits(), 0);
    }

    #[tokio::test]
    async fn a_body_nobody_takes_stalls_its_connection() {
        let budget = Budget::new(1 << 20);
        let sending = Arc::<Sending>::default();
        let timeout = Duration::from_millis(400);
        let stall = stalled(&sending, timeout);
        tokio::pin!(stall);
        // Nothing sent: nothing stalls.
        let idle = tokio::time::timeout(2 * timeout, stall.as_mut()).await;
        assert!(idle.is_err());
        let mut body = metered(response(4 * CHUNK), None, &budget, &sending)
            .unwrap()
            .into_body();
        // Taken a chunk at a time within the timeout: it moves.
        for _ in 0..3 {
            let moving = tokio::time::timeout(timeout / 4, stall.as_mut()).await;
            assert!(moving.is_err());
            body.frame().await.unwrap().unwrap();
        }
        // Then nothing is taken: the connection is to be closed.
        tokio::time::timeout(4 * timeout, stall.as_mut())
            .await
            .expect("stalled");
    }
}
