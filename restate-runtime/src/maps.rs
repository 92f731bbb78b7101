//! The hash maps and sets of the engine's hot paths (invocations by id, lanes by key, services
//! by name, what a checkpoint keeps aside): std's maps with foldhash instead of SipHash, which
//! hashed an id or a key several times per invocation at a few percent of its instructions.
//! foldhash is seeded per process, as std's hasher is, so keys chosen by a client (object
//! keys) cannot be aimed at one bucket.

/// A `HashMap` with the faster hasher; build one with `FastMap::default()`.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with the faster hasher; build one with `FastSet::default()`.
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
