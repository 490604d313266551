//! DH-HMAC-CHAP's parameters and secrets (NVMe Base Specification 2.0,
//! 8.13.5): the hash functions and Diffie-Hellman groups by their protocol
//! identifiers and upstream SPDK's names, and a secret in its representation
//! `DHHC-1:HH:<base64 of the key and its CRC-32>:`, where `HH` names the hash
//! that transforms the key for each NQN (00: used as it is).
//!
//! No secret ever reaches a message: errors say what is wrong with a key's
//! text, never the text.

use std::fmt;

use openssl::hash::{hash, MessageDigest};
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// A hash function of DH-HMAC-CHAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashFn {
    /// SHA-256 (identifier 1).
    Sha256,
    /// SHA-384 (identifier 2).
    Sha384,
    /// SHA-512 (identifier 3).
    Sha512,
}

impl HashFn {
    /// Every hash, from the strongest: the order the controller prefers.
    pub const STRONGEST_FIRST: [HashFn; 3] = [HashFn::Sha512, HashFn::Sha384, HashFn::Sha256];

    /// Its protocol identifier.
    pub fn id(self) -> u8 {
        match self {
            HashFn::Sha256 => 1,
            HashFn::Sha384 => 2,
            HashFn::Sha512 => 3,
        }
    }

    /// The hash of protocol identifier `id`.
    pub fn from_id(id: u8) -> Option<HashFn> {
        Self::STRONGEST_FIRST.into_iter().find(|h| h.id() == id)
    }

    /// Upstream SPDK's name (`nvmf_set_config --dhchap-digests`).
    pub fn name(self) -> &'static str {
        match self {
            HashFn::Sha256 => "sha256",
            HashFn::Sha384 => "sha384",
            HashFn::Sha512 => "sha512",
        }
    }

    /// The hash named `name`.
    pub fn from_name(name: &str) -> Option<HashFn> {
        Self::STRONGEST_FIRST.into_iter().find(|h| h.name() == name)
    }

    /// Its output length in bytes (the protocol's HL).
    pub fn output_len(self) -> usize {
        self.digest().size()
    }

    fn digest(self) -> MessageDigest {
        match self {
            HashFn::Sha256 => MessageDigest::sha256(),
            HashFn::Sha384 => MessageDigest::sha384(),
            HashFn::Sha512 => MessageDigest::sha512(),
        }
    }

    /// HMAC with this hash of the concatenation of `parts`, keyed by `key`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, String> {
        let failed = |e: openssl::error::ErrorStack| format!("HMAC-{}: {e}", self.name());
        let key = PKey::hmac(key).map_err(failed)?;
        let mut signer = Signer::new(self.digest(), &key).map_err(failed)?;
        for part in parts {
            signer.update(part).map_err(failed)?;
        }
        signer.sign_to_vec().map_err(failed)
    }

    /// This hash of `data`.
    pub fn hash(self, data: &[u8]) -> Result<Vec<u8>, String> {
        hash(self.digest(), data)
            .map(|d| d.to_vec())
            .map_err(|e| format!("{}: {e}", self.name()))
    }
}

/// A Diffie-Hellman group of DH-HMAC-CHAP: none, or one of RFC 7919's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// No Diffie-Hellman exchange (identifier 0).
    Null,
    /// ffdhe2048 (1).
    Ffdhe2048,
    /// ffdhe3072 (2).
    Ffdhe3072,
    /// ffdhe4096 (3).
    Ffdhe4096,
    /// ffdhe6144 (4).
    Ffdhe6144,
    /// ffdhe8192 (5).
    Ffdhe8192,
}

impl DhGroup {
    /// Every group, from the strongest: the order the controller prefers.
    pub const STRONGEST_FIRST: [DhGroup; 6] = [
        DhGroup::Ffdhe8192,
        DhGroup::Ffdhe6144,
        DhGroup::Ffdhe4096,
        DhGroup::Ffdhe3072,
        DhGroup::Ffdhe2048,
        DhGroup::Null,
    ];

    /// Its protocol identifier.
    pub fn id(self) -> u8 {
        match self {
            DhGroup::Null => 0,
            DhGroup::Ffdhe2048 => 1,
            DhGroup::Ffdhe3072 => 2,
            DhGroup::Ffdhe4096 => 3,
            DhGroup::Ffdhe6144 => 4,
            DhGroup::Ffdhe8192 => 5,
        }
    }

    /// The group of protocol identifier `id`.
    pub fn from_id(id: u8) -> Option<DhGroup> {
        Self::STRONGEST_FIRST.into_iter().find(|g| g.id() == id)
    }

    /// Upstream SPDK's name (`nvmf_set_config --dhchap-dhgroups`).
    pub fn name(self) -> &'static str {
        match self {
            DhGroup::Null => "null",
            DhGroup::Ffdhe2048 => "ffdhe2048",
            DhGroup::Ffdhe3072 => "ffdhe3072",
            DhGroup::Ffdhe4096 => "ffdhe4096",
            DhGroup::Ffdhe6144 => "ffdhe6144",
            DhGroup::Ffdhe8192 => "ffdhe8192",
        }
    }

    /// The group named `name`.
    pub fn from_name(name: &str) -> Option<DhGroup> {
        Self::STRONGEST_FIRST.into_iter().find(|g| g.name() == name)
    }

    /// OpenSSL's identifier of the group (`NID_ffdhe2048`...), none for null.
    pub fn openssl_nid(self) -> Option<i32> {
        match self {
            DhGroup::Null => None,
            DhGroup::Ffdhe2048 => Some(1126),
            DhGroup::Ffdhe3072 => Some(1127),
            DhGroup::Ffdhe4096 => Some(1128),
            DhGroup::Ffdhe6144 => Some(1129),
            DhGroup::Ffdhe8192 => Some(1130),
        }
    }
}

/// A DH-HMAC-CHAP secret: the key and the hash that transforms it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    transform: Option<HashFn>,
    key: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("transform", &self.transform)
            .field("key_len", &self.key.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Not a guarantee (copies may exist), but no freed page keeps it.
        self.key.iter_mut().for_each(|b| *b = 0);
    }
}

/// The text every secret starts with.
pub const SECRET_PREFIX: &str = "DHHC-1:";

impl Secret {
    /// Reads a secret in its representation, as `nvme gen-dhchap-key` writes
    /// it (surrounding whitespace ignored). The key is 32, 48 or 64 bytes
    /// and its CRC-32 must match.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        let rest = text.strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            format!("a DH-HMAC-CHAP secret starts with {SECRET_PREFIX:?} (nvme gen-dhchap-key makes one)")
        })?;
        let (hash_id, rest) = rest
            .split_once(':')
            .ok_or("a DH-HMAC-CHAP secret is DHHC-1:<hash>:<base64>:")?;
        let transform = match hash_id {
            "00" => None,
            "01" => Some(HashFn::Sha256),
            "02" => Some(HashFn::Sha384),
            "03" => Some(HashFn::Sha512),
            _ => {
                return Err(
                    "a DH-HMAC-CHAP secret's hash is 00, 01, 02 or 03 (DHHC-1:<hash>:...)".into(),
                )
            }
        };
        let encoded = rest
            .strip_suffix(':')
            .ok_or("a DH-HMAC-CHAP secret ends with ':'")?;
        let mut decoded = openssl::base64::decode_block(encoded)
            .map_err(|_| "a DH-HMAC-CHAP secret's key is not valid base64".to_string())?;
        if ![36, 52, 68].contains(&decoded.len()) {
            let len = decoded.len().saturating_sub(4);
            decoded.iter_mut().for_each(|b| *b = 0);
            return Err(format!(
                "a DH-HMAC-CHAP secret's key is 32, 48 or 64 bytes, not {len}"
            ));
        }
        let crc_at = decoded.len() - 4;
        let crc = u32::from_le_bytes(decoded[crc_at..].try_into().expect("four bytes"));
        let key = decoded[..crc_at].to_vec();
        decoded.iter_mut().for_each(|b| *b = 0);
        if crc32fast::hash(&key) != crc {
            return Err(
                "a DH-HMAC-CHAP secret's CRC-32 does not match its key (mistyped or cut short?)"
                    .into(),
            );
        }
        Ok(Secret { transform, key })
    }

    /// The key the HMAC of a response uses for `nqn` (the host's NQN for the
    /// host's secret, the subsystem's for the controller's): the key itself,
    /// or HMAC(key, nqn || "NVMe-over-Fabrics") with the secret's hash.
    pub fn key_for(&self, nqn: &str) -> Result<Vec<u8>, String> {
        match self.transform {
            None => Ok(self.key.clone()),
            Some(h) => h.hmac(&self.key, &[nqn.as_bytes(), b"NVMe-over-Fabrics"]),
        }
    }

    /// The secret's representation (for tests: the way a host is given it).
    pub fn to_text(&self) -> String {
        let mut raw = self.key.clone();
        raw.extend_from_slice(&crc32fast::hash(&self.key).to_le_bytes());
        let hash = self.transform.map_or(0, HashFn::id);
        format!(
            "{SECRET_PREFIX}{hash:02x}:{}:",
            openssl::base64::encode_block(&raw)
        )
    }

    /// A secret of `key` (32, 48 or 64 bytes), transformed with `transform`.
    pub fn from_key(key: &[u8], transform: Option<HashFn>) -> Result<Secret, String> {
        if ![32, 48, 64].contains(&key.len()) {
            return Err(format!(
                "a DH-HMAC-CHAP key is 32, 48 or 64 bytes, not {}",
                key.len()
            ));
        }
        Ok(Secret {
            transform,
            key: key.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_reads_back_from_its_representation_and_its_crc_is_checked() {
        let s = Secret::from_key(&[7u8; 32], Some(HashFn::Sha256)).unwrap();
        let text = s.to_text();
        assert!(text.starts_with("DHHC-1:01:"));
        assert_eq!(Secret::parse(&format!(" {text}\n")).unwrap(), s);
        // One character of the base64 changed: the CRC no longer matches
        // (or the text is no longer base64).
        let mut bad = text.into_bytes();
        bad[12] = if bad[12] == b'A' { b'B' } else { b'A' };
        let e = Secret::parse(std::str::from_utf8(&bad).unwrap()).unwrap_err();
        assert!(e.contains("CRC-32") || e.contains("base64"), "{e}");
    }

    #[test]
    fn bad_secrets_are_refused_without_their_text_in_the_message() {
        for (text, says) in [
            ("DHHC-2:00:AAAA:", "starts with"),
            ("DHHC-1:07:AAAA:", "hash is 00"),
            ("DHHC-1:00:!!!!:", "base64"),
            ("DHHC-1:00:QUFBQQ==:", "32, 48 or 64 bytes, not 0"),
            ("DHHC-1:00:QUFBQQ==", "ends with"),
        ] {
            let e = Secret::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains("QUFB") && !e.contains("!!!!"), "{e}");
        }
    }

    #[test]
    fn a_transformed_key_is_the_hmac_of_the_nqn_and_the_fixed_text() {
        let s = Secret::from_key(&[1u8; 48], Some(HashFn::Sha384)).unwrap();
        let nqn = "nqn.2014-08.org.nvmexpress:uuid:1";
        let expected = HashFn::Sha384
            .hmac(&[1u8; 48], &[format!("{nqn}NVMe-over-Fabrics").as_bytes()])
            .unwrap();
        assert_eq!(s.key_for(nqn).unwrap(), expected);
        assert_eq!(expected.len(), 48);
        let plain = Secret::from_key(&[1u8; 48], None).unwrap();
        assert_eq!(plain.key_for(nqn).unwrap(), vec![1u8; 48]);
    }

    #[test]
    fn hashes_and_groups_have_upstreams_names_and_the_protocols_ids() {
        for h in HashFn::STRONGEST_FIRST {
            assert_eq!(HashFn::from_name(h.name()), Some(h));
            assert_eq!(HashFn::from_id(h.id()), Some(h));
        }
        assert_eq!(HashFn::Sha256.output_len(), 32);
        assert_eq!(HashFn::Sha512.output_len(), 64);
        for g in DhGroup::STRONGEST_FIRST {
            assert_eq!(DhGroup::from_name(g.name()), Some(g));
            assert_eq!(DhGroup::from_id(g.id()), Some(g));
        }
        assert_eq!(DhGroup::from_id(6), None);
    }
}
