//! HMAC-SHA256: webhook signatures, and the MACs under the store's secret that make awakeable
//! ids and random seeds impossible to compute from outside.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Constant-time equality of a given MAC with the expected one: the time taken must not tell a
/// forger how many leading bytes were right.
pub(crate) fn same_mac(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    given.len() == expected.len() && bool::from(given.ct_eq(expected))
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}
