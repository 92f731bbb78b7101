//! Where the processes of a shared store serve their ingress: the URL this process advertises,
//! and which process runs each partition at which URL. A request-response call for a
//! partition that runs in another process is relayed to that process's ingress (one hop, and
//! the owner runs it as its own), instead of going through the partition's inbox (a row
//! written and removed, a notification, the result read back from the store).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use super::partitions::partition_of;

/// The routing table of a shared store's processes. The backend keeps it: this process's own
/// identity, and each partition's owner with the URL it advertised; the runtime says what
/// URL this process's ingress is reached at.
///
/// ```
/// use restate_runtime::storage::{Peer, Peers};
/// let peers = Peers::default();
/// peers.set_me(7);
/// peers.set_routes(4, [(1, Peer { process: 9, url: "http://10.0.0.2:8080".into() })]);
/// // Partition key 5 is partition 1 of 4: run by process 9.
/// assert_eq!(peers.route(5).map(|p| p.process), Some(9));
/// // No other process is known to run partition 2.
/// assert!(peers.route(6).is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Peers(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    advertised: RwLock<Option<Arc<str>>>,
    /// This process's identity among its peers (0: not known yet).
    me: AtomicI64,
    routes: RwLock<Routes>,
    /// Bumped at every [`Peers::set_routes`].
    read: watch::Sender<u64>,
    /// Peers whose advertised URL led to another process: not routed to again.
    misrouted: Mutex<HashSet<Peer>>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            advertised: RwLock::default(),
            me: AtomicI64::default(),
            routes: RwLock::default(),
            read: watch::channel(0).0,
            misrouted: Mutex::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Routes {
    count: u32,
    by_partition: Vec<Option<Peer>>,
}

/// Another process of the deployment: its identity and the base URL of its ingress.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The process's identity (on PostgreSQL its writer's backend pid).
    pub process: i64,
    /// Its ingress's base URL, as it advertised it (`http://host:port`, maybe with a path).
    pub url: Arc<str>,
}

impl Peers {
    /// The ingress URL this process is reached at by its peers (trailing `/` dropped).
    pub fn advertise(&self, url: &str) {
        let url: Arc<str> = url.trim_end_matches('/').into();
        *self.0.advertised.write().expect("peers lock") = Some(url);
    }

    /// What [`advertise`](Self::advertise) recorded, if anything.
    pub fn advertised(&self) -> Option<Arc<str>> {
        self.0.advertised.read().expect("peers lock").clone()
    }

    /// Records this process's identity.
    pub fn set_me(&self, process: i64) {
        self.0.me.store(process, Ordering::Relaxed);
    }

    /// This process's identity, once known.
    pub fn me(&self) -> Option<i64> {
        Some(self.0.me.load(Ordering::Relaxed)).filter(|p| *p != 0)
    }

    /// Replaces the table: `routes` are (partition, owner) pairs of `count` partitions;
    /// a partition not listed has no owner known to be reachable.
    pub fn set_routes(&self, count: u32, routes: impl IntoIterator<Item = (u32, Peer)>) {
        let mut by_partition = vec![None; count as usize];
        for (partition, peer) in routes {
            if let Some(slot) = by_partition.get_mut(partition as usize) {
                *slot = Some(peer);
            }
        }
        {
            // Only peers still routed to stay known as misrouted: the set is bounded by the
            // live processes, not by every process that ever ran. Those are left out of the
            // table, so that a lookup takes no lock but the table's.
            let mut misrouted = self.0.misrouted.lock().expect("peers lock");
            misrouted.retain(|peer| by_partition.iter().flatten().any(|p| p == peer));
            for slot in &mut by_partition {
                if slot.as_ref().is_some_and(|peer| misrouted.contains(peer)) {
                    *slot = None;
                }
            }
        }
        *self.0.routes.write().expect("peers lock") = Routes {
            count,
            by_partition,
        };
        self.0.read.send_modify(|n| *n += 1);
    }

    /// Changes each time the table is read again (whether or not a route changed).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.0.read.subscribe()
    }

    /// `peer`'s URL led to another process (a loopback address advertised on another host,
    /// a port taken over): it is not routed to again. Whether this is the first time.
    pub fn misrouted(&self, peer: &Peer) -> bool {
        let first = (self.0.misrouted.lock().expect("peers lock")).insert(peer.clone());
        let mut routes = self.0.routes.write().expect("peers lock");
        for slot in &mut routes.by_partition {
            if slot.as_ref() == Some(peer) {
                *slot = None;
            }
        }
        first
    }

    /// The process that runs the partition of `partition_key`, if it is another one and
    /// advertised its ingress.
    pub fn route(&self, partition_key: u64) -> Option<Peer> {
        let routes = self.0.routes.read().expect("peers lock");
        let partition = partition_of(partition_key, routes.count)?;
        let peer = routes.by_partition.get(partition as usize)?.as_ref()?;
        (Some(peer.process) != self.me()).then(|| peer.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_this_process_runs_has_no_route() {
        let peers = Peers::default();
        peers.set_me(3);
        let peer = |process| Peer {
            process,
            url: "http://127.0.0.1:1".into(),
        };
        peers.set_routes(2, [(0, peer(3)), (1, peer(4))]);
        assert_eq!(peers.route(0), None, "its own");
        assert_eq!(peers.route(1), Some(peer(4)));
        let changes = peers.changes();
        peers.set_routes(2, []);
        assert!(changes.has_changed().unwrap(), "a new table is told");
        assert_eq!(peers.route(1), None, "replaced, not merged");
    }

    #[test]
    fn a_misrouted_peer_is_not_routed_to_again() {
        let peers = Peers::default();
        let peer = Peer {
            process: 4,
            url: "http://127.0.0.1:1".into(),
        };
        peers.set_routes(1, [(0, peer.clone())]);
        assert!(peers.misrouted(&peer), "the first time");
        assert!(!peers.misrouted(&peer));
        assert_eq!(peers.route(0), None);
        let moved = Peer {
            url: "http://10.0.0.2:8080".into(),
            ..peer
        };
        peers.set_routes(1, [(0, moved.clone())]);
        assert_eq!(peers.route(0), Some(moved), "advertised anew");
    }

    #[test]
    fn an_advertised_url_loses_its_trailing_slash() {
        let peers = Peers::default();
        assert_eq!(peers.advertised(), None);
        peers.advertise("http://10.0.0.1:8080/durable/");
        assert_eq!(
            peers.advertised().as_deref(),
            Some("http://10.0.0.1:8080/durable")
        );
    }
}
