//! File identity: device and inode plus a fingerprint of the first bytes.
//!
//! A path says where a file is now, not which file it is: rotation renames, copytruncate
//! rewrites in place, and a freed inode number is handed to the next file created. So a
//! file is (dev, inode) *and* the content of its first [`HEAD_BYTES`] bytes.
//!
//! A file shorter than `HEAD_BYTES` has a short head. Its fingerprint covers only the bytes
//! there are (`len` says how many), and as the file grows the head grows with it: two heads
//! belong to the same file when the shorter is a prefix of the longer
//! ([`heads_consistent`]). The hash is FNV-1a, written out here because `std`'s hasher is
//! not stable across Rust releases and checkpoints must outlive an upgrade.

use std::fmt;

/// How many leading bytes identify a file's content.
pub const HEAD_BYTES: usize = 256;

/// The device and inode of a file, from `fstat` on the descriptor that is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevIno {
    pub dev: u64,
    pub ino: u64,
}

/// A hash of the first `len` bytes of a file (`len <= HEAD_BYTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub len: u16,
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of a head (only its first `HEAD_BYTES` bytes count).
    pub fn of(head: &[u8]) -> Self {
        let head = &head[..head.len().min(HEAD_BYTES)];
        Fingerprint {
            len: head.len() as u16,
            hash: fnv1a(head),
        }
    }

    /// Whether a file whose head is now `head` can be the file this fingerprint was taken
    /// of: its first `self.len` bytes hash the same. A head shorter than the fingerprint
    /// cannot be (the file would have shrunk, which is a truncation: a new file anyway).
    pub fn matches(&self, head: &[u8]) -> bool {
        let n = self.len as usize;
        head.len() >= n && fnv1a(&head[..n]) == self.hash
    }
}

/// `len:hash` in hex, the form checkpoints store (a `u64` does not fit TOML's integers).
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:016x}", self.len, self.hash)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("fingerprint '{s}' is not LEN:HEX");
        let (len, hash) = s.split_once(':').ok_or_else(bad)?;
        let len: u16 = len.parse().map_err(|_| bad())?;
        if len as usize > HEAD_BYTES {
            return Err(bad());
        }
        let hash = u64::from_str_radix(hash, 16).map_err(|_| bad())?;
        Ok(Fingerprint { len, hash })
    }
}

/// Two heads can be the same file's if the shorter is a prefix of the longer.
pub fn heads_consistent(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len()).min(HEAD_BYTES);
    a[..n] == b[..n]
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_head_still_matches_a_truncated_or_rewritten_one_does_not() {
        let fp = Fingerprint::of(b"2026-01-01 boot\n");
        assert!(fp.matches(b"2026-01-01 boot\n"));
        assert!(fp.matches(b"2026-01-01 boot\nmore\n"));
        assert!(!fp.matches(b"2026-01-01"), "shorter: shrank");
        assert!(!fp.matches(b"2026-01-02 boot\n"));
        assert!(Fingerprint::of(b"").matches(b"anything"));
        assert!(heads_consistent(b"ab", b"abc"));
        assert!(!heads_consistent(b"ax", b"abc"));
    }

    #[test]
    fn only_the_first_head_bytes_count_and_the_hash_is_stable() {
        let long = vec![b'x'; 1000];
        assert_eq!(Fingerprint::of(&long), Fingerprint::of(&long[..HEAD_BYTES]));
        assert_eq!(Fingerprint::of(&long).len as usize, HEAD_BYTES);
        // Pinned: a changed hash would orphan every checkpoint in the field.
        assert_eq!(Fingerprint::of(b"a").hash, 0xaf63_dc4c_8601_ec8c);
        let fp = Fingerprint::of(b"hello\n");
        assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
        assert!("300:00".parse::<Fingerprint>().is_err());
        assert!("x".parse::<Fingerprint>().is_err());
    }
}
