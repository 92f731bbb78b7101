//! [`EngineRef`]: a `Copy` reference to a running engine, for values that must stay `Copy`
//! (invocation handles sent from outside a handler) yet reach the engine later. It is a number
//! in a process-wide table of weak references, so it keeps nothing alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{Engine, EngineInner};

static NEXT: AtomicU64 = AtomicU64::new(1);
static LIVE: Mutex<Vec<(u64, Weak<EngineInner>)>> = Mutex::new(Vec::new());

/// A copyable, non-owning reference to an engine.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineRef(u64);

impl Engine {
    /// This engine's reference, registered on first use.
    pub(crate) fn reference(&self) -> EngineRef {
        let id = *self.reference.get_or_init(|| {
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            let mut live = LIVE.lock().expect("engine table lock");
            // Engines come and go in tests; forget the ones that are gone.
            live.retain(|(_, engine)| engine.strong_count() > 0);
            live.push((id, Arc::downgrade(&self.0)));
            id
        });
        EngineRef(id)
    }
}

impl Engine {
    /// Makes `reference` reach this engine from now on, in place of the one it reached (a
    /// test runtime's engine after a restart): handles kept across the crash follow.
    pub(crate) fn adopt_reference(&self, reference: EngineRef) {
        let mut live = LIVE.lock().expect("engine table lock");
        live.retain(|(id, engine)| *id != reference.0 && engine.strong_count() > 0);
        live.push((reference.0, Arc::downgrade(&self.0)));
        drop(live);
        // A reference of its own already handed out keeps working too.
        let _ = self.reference.set(reference.0);
    }
}

impl EngineRef {
    /// The engine, unless it has shut down and been dropped.
    pub(crate) fn get(self) -> Option<Engine> {
        let live = LIVE.lock().expect("engine table lock");
        live.iter()
            .find(|(id, _)| *id == self.0)
            .and_then(|(_, engine)| engine.upgrade())
            .map(Engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_reference_finds_nothing() {
        assert!(EngineRef(u64::MAX).get().is_none());
    }
}
