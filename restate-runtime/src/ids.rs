//! Invocation ids in Restate's textual form, and the stable partition hash.
//!
//! An id is `inv_1` + base62(partition key: u64, 11 chars) + base62(uuid: u128, 22 chars): 38
//! characters. The partition key is a stable hash (the first 8 bytes of SHA-256, never std's
//! randomised hasher) of the service name and object key for keyed targets, so every invocation
//! of one key lands in one partition; unkeyed targets take a random one (or, with an idempotency
//! key, one derived from it). The partition is `partition_key % partitions`.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const PREFIX: &str = "inv_1";
const PK_CHARS: usize = 11;
const UUID_CHARS: usize = 22;
/// Length of an invocation id in its textual form.
pub const INVOCATION_ID_LEN: usize = PREFIX.len() + PK_CHARS + UUID_CHARS;

/// The id of one invocation.
///
/// ```
/// use restate_runtime::InvocationId;
/// let id: InvocationId = "inv_1gdJBtdVEcM942bjcDmb1c1khoaJe11Hbz".parse().unwrap();
/// assert_eq!(id.to_string(), "inv_1gdJBtdVEcM942bjcDmb1c1khoaJe11Hbz");
/// assert!("inv_1short".parse::<InvocationId>().is_err());
/// ```
// Field order is the sort order: uuid first, as in the binary form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvocationId {
    uuid: u128,
    partition_key: u64,
}

/// Why a string is not an invocation id.
///
/// ```
/// use restate_runtime::{IdParseError, InvocationId};
/// assert_eq!("inv_1abc".parse::<InvocationId>(), Err(IdParseError::BadLength));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// Not 38 characters.
    #[error("bad length")]
    BadLength,
    /// Does not start with `inv_1`.
    #[error("id doesn't match the expected type 'inv_1'")]
    BadPrefix,
    /// A character outside `0-9a-zA-Z`, or a value that overflows.
    #[error("base62 decode error")]
    BadDigit,
}

impl IdParseError {
    /// The reason said of an awakeable id (`sign_1` then base64url) rather than of an
    /// invocation id, whose form the variants' own messages describe.
    pub(crate) fn of_awakeable(&self) -> &'static str {
        match self {
            Self::BadPrefix => "an awakeable id starts with `sign_1`",
            Self::BadDigit => "not base64url after `sign_1`",
            Self::BadLength => "bad length",
        }
    }
}

impl InvocationId {
    /// An id for a fresh invocation whose partition key is given, created at `now_ms` (the
    /// engine's clock).
    ///
    /// Its uuid is time-ordered, as a UUIDv7: milliseconds since the epoch in the top 48 bits,
    /// then a 32-bit counter of this process (from a random start), then 48 random bits. New
    /// invocations therefore sort after older ones, so a commit appends its records to the last
    /// pages of the store's trees instead of rewriting one scattered page per invocation (this
    /// cut the bytes written per commit by an order of magnitude); within a millisecond, a
    /// process's ids sort in creation order (delayed sends due together fire in send order).
    pub(crate) fn fresh(partition_key: u64, now_ms: u64) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: std::sync::LazyLock<AtomicU32> =
            std::sync::LazyLock::new(|| AtomicU32::new(rand::random()));
        let millis = u128::from(now_ms) & ((1 << 48) - 1);
        let count = u128::from(COUNTER.fetch_add(1, Ordering::Relaxed));
        Self {
            partition_key,
            uuid: (millis << 80) | (count << 48) | (rand::random::<u128>() >> 80),
        }
    }

    /// A fresh id at the wall clock's time (tests).
    #[cfg(test)]
    pub(crate) fn random(partition_key: u64) -> Self {
        Self::fresh(partition_key, crate::clock::now_ms())
    }

    /// The deterministic id of the invocation of `target` with an idempotency key: duplicates map
    /// to the same id, which is how deduplication finds the original.
    pub(crate) fn idempotent(
        service: &str,
        key: Option<&str>,
        handler: &str,
        idempotency_key: &str,
    ) -> Self {
        let uuid = hash_parts(&["ik", service, key.unwrap_or(""), handler, idempotency_key]);
        let partition_key = match key {
            Some(k) => partition_key_of(service, k),
            None => (uuid >> 64) as u64,
        };
        Self {
            partition_key,
            uuid,
        }
    }

    /// The deterministic id of a workflow's `run` for one key.
    pub(crate) fn workflow(service: &str, key: &str) -> Self {
        Self {
            partition_key: partition_key_of(service, key),
            uuid: hash_parts(&["wf", service, key]),
        }
    }

    /// The partition key: the same for every invocation of one object or workflow key.
    ///
    /// ```
    /// use restate_runtime::InvocationId;
    /// let id: InvocationId = "inv_1000000000010000000000000000000002".parse().unwrap();
    /// assert_eq!(id.partition_key(), 1);
    /// ```
    pub fn partition_key(&self) -> u64 {
        self.partition_key
    }

    /// The 24-byte binary form, as Restate's: partition key then uuid, both big-endian (it is
    /// part of an awakeable id's text).
    pub(crate) fn to_bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.partition_key.to_be_bytes());
        out[8..].copy_from_slice(&self.uuid.to_be_bytes());
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let pk: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let uuid: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
        Some(Self {
            partition_key: u64::from_be_bytes(pk),
            uuid: u128::from_be_bytes(uuid),
        })
    }

    /// The 24-byte key a store files the invocation under: the binary form with the uuid moved
    /// first, so fresh ids sort by creation time (see [`InvocationId::random`]).
    pub(crate) fn storage_key(self) -> [u8; 24] {
        let mut key = self.to_bytes();
        key.rotate_left(8);
        key
    }

    pub(crate) fn from_storage_key(key: &[u8]) -> Option<Self> {
        let mut bytes: [u8; 24] = key.get(..24)?.try_into().ok()?;
        bytes.rotate_right(8);
        Self::from_bytes(&bytes)
    }
}

/// The partition key of a keyed target: first 8 bytes of SHA-256 over `"pk"`, service and key.
pub(crate) fn partition_key_of(service: &str, key: &str) -> u64 {
    (hash_parts(&["pk", service, key]) >> 64) as u64
}

/// SHA-256 over the parts, each preceded by a `,` separator, truncated to 128 bits.
fn hash_parts(parts: &[&str]) -> u128 {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b",");
        }
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    u128::from_be_bytes(digest[..16].try_into().expect("sha256 has 32 bytes"))
}

/// 62^10, the largest power of 62 below 2^64.
const TEN_DIGITS: u64 = 62u64.pow(10);

/// Writes the lowest `out.len()` base-62 digits of `value`, most significant first. The value
/// is cut into chunks of ten digits, each small enough for `u64`: a 128-bit division is a
/// library call, and one per chunk instead of two per digit makes an id's text (on every
/// response, span and log line) several times cheaper.
fn encode_base62(mut value: u128, out: &mut [u8]) {
    let mut slots = out.iter_mut().rev();
    loop {
        let above = value / u128::from(TEN_DIGITS);
        let mut chunk = (value - above * u128::from(TEN_DIGITS)) as u64;
        value = above;
        for _ in 0..10 {
            let Some(slot) = slots.next() else { return };
            *slot = ALPHABET[(chunk % 62) as usize];
            chunk /= 62;
        }
    }
}

fn decode_base62(s: &str) -> Result<u128, IdParseError> {
    s.bytes().try_fold(0u128, |acc, c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'z' => c - b'a' + 10,
            b'A'..=b'Z' => c - b'A' + 36,
            _ => return Err(IdParseError::BadDigit),
        };
        acc.checked_mul(62)
            .and_then(|v| v.checked_add(u128::from(digit)))
            .ok_or(IdParseError::BadDigit)
    })
}

impl fmt::Display for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; INVOCATION_ID_LEN];
        let (prefix, digits) = text.split_at_mut(PREFIX.len());
        prefix.copy_from_slice(PREFIX.as_bytes());
        let (pk, uuid) = digits.split_at_mut(PK_CHARS);
        encode_base62(u128::from(self.partition_key), pk);
        encode_base62(self.uuid, uuid);
        f.write_str(std::str::from_utf8(&text).expect("alphabet is ascii"))
    }
}

impl fmt::Debug for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for InvocationId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != INVOCATION_ID_LEN {
            return Err(IdParseError::BadLength);
        }
        let rest = s.strip_prefix(PREFIX).ok_or(IdParseError::BadPrefix)?;
        // Split by bytes: a multi-byte character across the split is a bad digit, not a panic.
        let (pk, uuid) = rest.as_bytes().split_at(PK_CHARS);
        let (pk, uuid) = (
            std::str::from_utf8(pk).map_err(|_| IdParseError::BadDigit)?,
            std::str::from_utf8(uuid).map_err(|_| IdParseError::BadDigit)?,
        );
        let partition_key =
            u64::try_from(decode_base62(pk)?).map_err(|_| IdParseError::BadDigit)?;
        Ok(Self {
            partition_key,
            uuid: decode_base62(uuid)?,
        })
    }
}

impl serde::Serialize for InvocationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for InvocationId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::Deserialize::deserialize(d)?;
        Self::from_bytes(&bytes).ok_or_else(|| serde::de::Error::custom("invocation id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_across_the_split_is_refused_without_a_panic() {
        // 38 bytes, the é's two bytes on either side of the partition key's end.
        let id = "inv_1aaaaaaaaaa\u{e9}bbbbbbbbbbbbbbbbbbbbb";
        assert_eq!(id.len(), INVOCATION_ID_LEN);
        assert_eq!(id.parse::<InvocationId>(), Err(IdParseError::BadDigit));
    }

    #[test]
    fn round_trips_text_and_bytes() {
        let id = InvocationId::random(u64::MAX);
        let text = id.to_string();
        assert_eq!(text.len(), INVOCATION_ID_LEN);
        assert_eq!(text.parse::<InvocationId>().unwrap(), id);
        assert_eq!(InvocationId::from_bytes(&id.to_bytes()).unwrap(), id);
        assert_eq!(
            InvocationId::from_storage_key(&id.storage_key()).unwrap(),
            id
        );
    }

    #[test]
    fn text_round_trips_at_the_edges_of_both_parts() {
        let values = [
            0,
            1,
            61,
            62,
            u128::from(TEN_DIGITS) - 1,
            u128::from(TEN_DIGITS),
        ];
        let uuids = values
            .into_iter()
            .chain([u128::MAX, u128::MAX / 3, 1 << 64]);
        for uuid in uuids {
            for partition_key in [0, 1, 62, TEN_DIGITS, u64::MAX] {
                let id = InvocationId {
                    uuid,
                    partition_key,
                };
                let text = id.to_string();
                assert_eq!(text.len(), INVOCATION_ID_LEN);
                assert_eq!(text.parse::<InvocationId>(), Ok(id), "{text}");
            }
        }
        let zero = InvocationId {
            uuid: 0,
            partition_key: 0,
        };
        assert_eq!(zero.to_string(), format!("inv_1{}", "0".repeat(33)));
        let max = InvocationId {
            uuid: u128::MAX,
            partition_key: u64::MAX,
        };
        // Both parts at their largest (computed independently, with arbitrary-precision integers).
        assert_eq!(max.to_string(), "inv_1lYGhA16ahyf7N42dgm5tFLK9N8MT7fHC7");
    }

    #[test]
    fn fresh_ids_file_in_creation_order() {
        let first = InvocationId::random(u64::MAX);
        let created = crate::clock::now_ms();
        while crate::clock::now_ms() == created {
            std::thread::yield_now();
        }
        // A later id sorts after, whatever its partition key and random bits.
        let later = InvocationId::random(0);
        assert!(first.storage_key() < later.storage_key());
        assert!(first < later);
    }

    #[test]
    fn fresh_ids_of_one_millisecond_sort_in_creation_order() {
        let ids: Vec<InvocationId> = (0..1000).map(|n| InvocationId::fresh(n, 42)).collect();
        // The counter starts anywhere: it may wrap once among them.
        let descents = ids.windows(2).filter(|w| w[0] >= w[1]).count();
        assert!(descents <= 1, "{descents} out of order");
    }

    #[test]
    fn idempotent_ids_are_deterministic_and_distinct() {
        let a = InvocationId::idempotent("S", None, "h", "k1");
        assert_eq!(a, InvocationId::idempotent("S", None, "h", "k1"));
        assert_ne!(a, InvocationId::idempotent("S", None, "h", "k2"));
        // The separator scheme keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(
            InvocationId::idempotent("S", Some("ab"), "c", "k"),
            InvocationId::idempotent("S", Some("a"), "bc", "k")
        );
    }

    /// Ids derived from names are stored (idempotency and workflow keys, partitions): they
    /// must not change with a dependency's version. Pinned to an independent SHA-256 of the
    /// same framing (Python's hashlib).
    #[test]
    fn derived_ids_are_pinned() {
        let id = InvocationId::idempotent("Counter", Some("k"), "add", "evt_1");
        assert_eq!(id.partition_key, 0x97d1_2508_8811_3079);
        assert_eq!(id.uuid, 0x63fd_91ac_58af_c37b_b8dc_5df9_901e_985e);
        let run = InvocationId::workflow("Signup", "ada");
        assert_eq!(run.uuid, 0x94e0_3616_411b_de8c_e2cf_4189_daeb_50f6);
    }

    #[test]
    fn keyed_targets_share_a_partition_key() {
        let a = InvocationId::idempotent("Counter", Some("k"), "add", "1");
        let b = InvocationId::idempotent("Counter", Some("k"), "get", "2");
        assert_eq!(a.partition_key(), b.partition_key());
        assert_eq!(a.partition_key(), partition_key_of("Counter", "k"));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!("x".parse::<InvocationId>(), Err(IdParseError::BadLength));
        let bad = format!("abc_1{}", "0".repeat(33));
        assert_eq!(bad.parse::<InvocationId>(), Err(IdParseError::BadPrefix));
        let bad = format!("inv_1{}", "!".repeat(33));
        assert_eq!(bad.parse::<InvocationId>(), Err(IdParseError::BadDigit));
        let overflow = format!("inv_1{}{}", "Z".repeat(11), "0".repeat(22));
        assert_eq!(
            overflow.parse::<InvocationId>(),
            Err(IdParseError::BadDigit)
        );
    }
}

/// The id of an awakeable: `sign_1` + base64url(invocation id, 24 bytes ‖ journal index, u32
/// big-endian ‖ tag, 16 bytes), 65 characters. The tag is a MAC of the rest under the store's
/// secret, so an id cannot be computed from an invocation's inputs (a workflow's invocation id
/// derives from its key): only the handler that created the awakeable can hand it out. Padding
/// is accepted when parsing.
///
/// ```
/// use restate_runtime::AwakeableId;
/// let text = "sign_1AAAAAAAAAAEAAAAAAAAAAAAAAAAAAAACAAAAEQEBAQEBAQEBAQEBAQEBAQE";
/// let id: AwakeableId = text.parse().unwrap();
/// assert_eq!(id.index(), 17);
/// assert_eq!(id.to_string(), text);
/// assert!("sign_1!!".parse::<AwakeableId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AwakeableId {
    invocation: InvocationId,
    index: u32,
    tag: [u8; 16],
}

const AWAKEABLE_PREFIX: &str = "sign_1";

impl AwakeableId {
    pub(crate) fn new(invocation: InvocationId, index: u32, tag: [u8; 16]) -> Self {
        Self {
            invocation,
            index,
            tag,
        }
    }

    /// The invocation waiting on it.
    ///
    /// ```
    /// use restate_runtime::AwakeableId;
    /// let id: AwakeableId = "sign_1AAAAAAAAAAEAAAAAAAAAAAAAAAAAAAACAAAAEQEBAQEBAQEBAQEBAQEBAQE"
    ///     .parse()
    ///     .unwrap();
    /// // Look it up in the admin API to see who is waiting.
    /// assert_eq!(id.invocation().to_string(), "inv_1000000000010000000000000000000002");
    /// ```
    pub fn invocation(&self) -> InvocationId {
        self.invocation
    }

    /// Its journal position in that invocation.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The MAC that makes the id unguessable.
    pub(crate) fn tag(&self) -> &[u8; 16] {
        &self.tag
    }
}

impl fmt::Display for AwakeableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        let mut raw = [0u8; 44];
        raw[..24].copy_from_slice(&self.invocation.to_bytes());
        raw[24..28].copy_from_slice(&self.index.to_be_bytes());
        raw[28..].copy_from_slice(&self.tag);
        write!(
            f,
            "{AWAKEABLE_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }
}

impl FromStr for AwakeableId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use base64::Engine as _;
        let rest = s
            .strip_prefix(AWAKEABLE_PREFIX)
            .ok_or(IdParseError::BadPrefix)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(rest.trim_end_matches('='))
            .map_err(|_| IdParseError::BadDigit)?;
        if raw.len() != 44 {
            return Err(IdParseError::BadLength);
        }
        Ok(Self {
            invocation: InvocationId::from_bytes(&raw[..24]).ok_or(IdParseError::BadLength)?,
            index: u32::from_be_bytes(raw[24..28].try_into().expect("4 bytes")),
            tag: raw[28..44].try_into().expect("16 bytes"),
        })
    }
}
