//! Which partitions a process runs: a set over the store's fixed partition count. A store of
//! one process runs all of them; on a shared database each process runs those it leases, and
//! the set changes as leases move ([`Storage::owned`](super::Storage::owned)).

use std::fmt;
use std::sync::Arc;

use crate::ids::InvocationId;

/// A set of partitions out of a fixed count.
///
/// ```
/// use restate_runtime::storage::Partitions;
/// let some = Partitions::of(8, [1, 5]);
/// assert!(some.contains(5) && !some.contains(2));
/// assert_eq!(some.partition_of(13), Some(5)); // a partition key's partition
/// assert!(some.holds_key(13));
/// assert_eq!(Partitions::all(8).without(&some).iter().collect::<Vec<_>>(), [0, 2, 3, 4, 6, 7]);
/// assert!(Partitions::none(8).is_empty());
/// ```
#[derive(Clone)]
pub struct Partitions {
    count: u32,
    bits: Arc<[u64]>,
    /// Which change of a process's set this is (not part of its value).
    version: u64,
}

impl PartialEq for Partitions {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.bits == other.bits
    }
}

impl Eq for Partitions {}

impl Partitions {
    /// No partition of `count`.
    pub fn none(count: u32) -> Self {
        Self::of(count, [])
    }

    /// Every partition of `count`.
    pub fn all(count: u32) -> Self {
        Self::of(count, 0..count)
    }

    /// The partitions listed (those not below `count` are left out).
    pub fn of(count: u32, partitions: impl IntoIterator<Item = u32>) -> Self {
        let mut bits = vec![0u64; count.div_ceil(64) as usize];
        for p in partitions.into_iter().filter(|p| *p < count) {
            bits[(p / 64) as usize] |= 1 << (p % 64);
        }
        Self {
            count,
            bits: bits.into(),
            version: 0,
        }
    }

    /// The same set as change number `version` of a process's set (see [`Self::version`]).
    pub fn numbered(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// Which change of a process's set this is: a shared store numbers the sets it hands
    /// its process ([`Storage::owned`](super::Storage::owned)), so that what the process
    /// says it left ([`Storage::left`](super::Storage::left)) names the set it acted on. A
    /// set made by hand is number 0; the number is not part of the set's value.
    ///
    /// ```
    /// use restate_runtime::storage::Partitions;
    /// let seen = Partitions::of(8, [1, 2]).numbered(7);
    /// assert_eq!(seen.version(), 7);
    /// assert_eq!(seen, Partitions::of(8, [1, 2]));
    /// ```
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many partitions there are in all (not how many are in the set).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether `partition` is in the set.
    pub fn contains(&self, partition: u32) -> bool {
        partition < self.count
            && self.bits[(partition / 64) as usize] & (1 << (partition % 64)) != 0
    }

    /// The partition a partition key falls in (`None` with no partitions at all).
    pub fn partition_of(&self, key: u64) -> Option<u32> {
        partition_of(key, self.count)
    }

    /// Whether the partition of partition key `key` is in the set.
    pub fn holds_key(&self, key: u64) -> bool {
        self.partition_of(key).is_some_and(|p| self.contains(p))
    }

    /// Whether the partition of `id` is in the set.
    pub fn holds(&self, id: &InvocationId) -> bool {
        self.holds_key(id.partition_key())
    }

    /// The partitions in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.count).filter(|p| self.contains(*p))
    }

    /// How many partitions are in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// A random partition key of a partition in the set (of any partition when the set is
    /// empty or whole).
    pub fn random_key(&self) -> u64 {
        let key: u64 = rand::random();
        let held = self.len();
        if held == 0 || held == self.count as usize {
            return key;
        }
        let count = u64::from(self.count);
        let nth = (key % held as u64) as usize;
        let partition = self.iter().nth(nth).map_or(0, u64::from);
        // The same key with its remainder moved to `partition` (no overflow: the part taken
        // off is at least `count - 1` below the maximum).
        key / count * count + partition
    }

    /// Those of the set that `other` lacks.
    pub fn without(&self, other: &Partitions) -> Partitions {
        Self::of(self.count, self.iter().filter(|p| !other.contains(*p)))
    }

    /// Those in either set.
    pub fn with(&self, other: &Partitions) -> Partitions {
        Self::of(self.count, self.iter().chain(other.iter()))
    }
}

impl fmt::Debug for Partitions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} partitions", self.len(), self.count)
    }
}

/// The partition a partition key falls in among `count` (`None` with no partitions at all).
pub(crate) fn partition_of(key: u64, count: u32) -> Option<u32> {
    (count > 0).then(|| (key % u64::from(count)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_span_words_and_place_ids_by_their_partition_key() {
        let set = Partitions::of(130, [0, 63, 64, 129, 130]);
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63, 64, 129]);
        assert_eq!(set.len(), 4);
        let rest = Partitions::all(130).without(&set);
        assert_eq!(rest.len(), 126);
        assert_eq!(rest.with(&set), Partitions::all(130));
        assert!(set.holds(&InvocationId::random(129)));
        assert!(set.holds(&InvocationId::random(130 + 63)));
        assert!(!set.holds(&InvocationId::random(1)));
        assert!(!Partitions::none(0).holds(&InvocationId::random(0)));
        for _ in 0..100 {
            assert!(set.contains((set.random_key() % 130) as u32));
        }
    }
}
