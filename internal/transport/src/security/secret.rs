//! The cluster secret (`--cluster-secret-file`) and the proofs peers exchange with it.
//!
//! A proof is HMAC-SHA256 keyed with the secret over a label, the side that computes it, both
//! node ids and both sides' nonces. Because each side's proof covers a nonce the other side
//! just chose, a recorded handshake does not verify again; because it names its side, one
//! side's proof cannot be sent back as the other's; because it names both ids, a proof made
//! for one pair of nodes says nothing about another pair.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use thiserror::Error;

/// Fewest bytes a secret may have: a guessable secret would authenticate nobody.
pub const MIN_SECRET_BYTES: usize = 32;
/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a proof (one HMAC-SHA256).
pub const PROOF_BYTES: usize = 32;

/// Separates these proofs from any other use of the same secret, and versions the handshake.
const LABEL: &[u8] = b"raftd peer handshake v1";

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the cluster secret {} has {len} bytes; it needs at least {MIN_SECRET_BYTES} (make one with: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > FILE)", path.display())]
    TooShort { path: PathBuf, len: usize },
}

/// Which end of a peer connection computes a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The node that dialled (and says Hello).
    Connector,
    /// The node that accepted.
    Acceptor,
}

/// What both ends of one handshake agree on: who dialled whom, with which nonces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript {
    pub connector: u64,
    pub acceptor: u64,
    pub connector_nonce: [u8; NONCE_BYTES],
    pub acceptor_nonce: [u8; NONCE_BYTES],
}

/// The shared secret. Its bytes never appear in `Debug` output or logs.
#[derive(Clone)]
pub struct ClusterSecret(Arc<Vec<u8>>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// Reads a secret file. Trailing whitespace (an editor's newline) is not part of the secret,
    /// so a file written by hand and one written by a script agree.
    pub fn load(path: &Path) -> Result<ClusterSecret, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort {
                path: path.to_path_buf(),
                len: end,
            });
        }
        let mut bytes = bytes;
        bytes.truncate(end);
        Ok(ClusterSecret(Arc::new(bytes)))
    }

    /// A secret from bytes already in memory (tests). `None` when shorter than the minimum.
    pub fn from_bytes(bytes: &[u8]) -> Option<ClusterSecret> {
        (bytes.len() >= MIN_SECRET_BYTES).then(|| ClusterSecret(Arc::new(bytes.to_vec())))
    }

    fn mac(&self, side: Side, t: &Transcript) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail; `from_bytes`/`load` keep the
        // secret non-empty anyway.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(LABEL);
        mac.update(match side {
            Side::Connector => b"\0connector\0",
            Side::Acceptor => b"\0acceptor\0\0",
        });
        mac.update(&t.connector.to_be_bytes());
        mac.update(&t.acceptor.to_be_bytes());
        mac.update(&t.connector_nonce);
        mac.update(&t.acceptor_nonce);
        mac
    }

    /// `side`'s proof for this handshake.
    pub fn proof(&self, side: Side, t: &Transcript) -> [u8; PROOF_BYTES] {
        self.mac(side, t).finalize().into_bytes().into()
    }

    /// Whether `proof` is `side`'s proof for this handshake (compared in constant time).
    pub fn verify(&self, side: Side, t: &Transcript, proof: &[u8]) -> bool {
        self.mac(side, t).verify_slice(proof).is_ok()
    }
}

/// A fresh nonce from the operating system's generator.
pub fn fresh_nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Lower-case hex, the form nonces and proofs take in handshake frames.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Exactly `N` bytes of hex, or `None`.
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> ClusterSecret {
        ClusterSecret::from_bytes(&[b; 32]).unwrap()
    }

    fn transcript() -> Transcript {
        Transcript {
            connector: 1,
            acceptor: 2,
            connector_nonce: [7; 32],
            acceptor_nonce: [9; 32],
        }
    }

    #[test]
    fn a_proof_verifies_only_for_its_side_secret_ids_and_nonces() {
        let s = secret(1);
        let t = transcript();
        let p = s.proof(Side::Connector, &t);
        assert!(s.verify(Side::Connector, &t, &p));
        // The other side's proof is a different value (no reflection).
        assert!(!s.verify(Side::Acceptor, &t, &p));
        assert!(!secret(2).verify(Side::Connector, &t, &p));
        for changed in [
            Transcript { connector: 3, ..t },
            Transcript { acceptor: 3, ..t },
            Transcript {
                connector_nonce: [8; 32],
                ..t
            },
            Transcript {
                acceptor_nonce: [8; 32],
                ..t
            },
        ] {
            assert!(!s.verify(Side::Connector, &changed, &p), "{changed:?}");
        }
        assert!(!s.verify(Side::Connector, &t, &p[..31]));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(fresh_nonce(), fresh_nonce());
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let n = fresh_nonce();
        assert_eq!(from_hex::<32>(&to_hex(&n)), Some(n));
        assert_eq!(to_hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(from_hex::<2>("0g00"), None);
        assert_eq!(from_hex::<2>("000"), None);
        assert_eq!(from_hex::<2>("ABcd"), Some([0xab, 0xcd]));
    }

    #[test]
    fn short_or_missing_secret_files_are_refused_with_the_path() {
        let dir = std::env::temp_dir().join(format!("raftd-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, format!("{}\n\n", "a".repeat(31))).unwrap();
        let err = ClusterSecret::load(&short).unwrap_err().to_string();
        assert!(err.contains("31 bytes") && err.contains("short"), "{err}");
        let ok = dir.join("ok");
        std::fs::write(&ok, format!("{}\n", "a".repeat(32))).unwrap();
        let a = ClusterSecret::load(&ok).unwrap();
        let b = ClusterSecret::from_bytes("a".repeat(32).as_bytes()).unwrap();
        let t = transcript();
        assert!(b.verify(Side::Acceptor, &t, &a.proof(Side::Acceptor, &t)));
        let missing = ClusterSecret::load(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
