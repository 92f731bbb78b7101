//! The hash maps and sets of the engine's hot paths (invocations by id, lanes by key, services
//! by name, what a checkpoint keeps aside): std's maps with foldhash instead of SipHash, which
//! hashed an id or a key several times per invocation at a few percent of its instructions.
//! foldhash is seeded per process, as std's hasher is: a client choosing object keys does not
//! know the seed. It is only minimally resistant to an attacker who can measure the effect of
//! many probes, a trade hashbrown makes by default too.

/// A `HashMap` with the faster hasher; build one with `FastMap::default()`.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with the faster hasher; build one with `FastSet::default()`.
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
