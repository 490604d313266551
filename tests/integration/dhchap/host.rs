//! The host's side of DH-HMAC-CHAP over the tests' raw NVMe/TCP host,
//! written from the specification apart from the target's code (only the
//! secrets' parsing, the HMAC and the key pair come from the library), so a
//! mistake on one side does not cancel out on the other. The Linux host
//! in `auth_host` is the interoperability check; this one reaches what the
//! kernel never sends.

use crate::nvme_tcp::{host, wire};
use openssl::bn::BigNum;
use spdk_pmem::auth::dhchap::generate_key;
use spdk_pmem::auth::secret::{DhGroup, HashFn, Secret};
use std::net::TcpStream;

pub const FCTYPE_AUTH_SEND: u8 = 0x05;
pub const FCTYPE_AUTH_RECV: u8 = 0x06;
/// Command Specific / Authentication Required, DNR set (status >> 1).
pub const AUTH_REQUIRED: u16 = 0x4191;

/// AUTHENTICATION_SEND of `msg` (SECP 0xE9, SPSP 1/1 unless changed).
pub fn send_sqe(cid: u16, len: u32, secp: u8, spsp: u8) -> wire::Sqe {
    wire::Sqe::new(wire::OPC_FABRICS, cid)
        .u8_at(4, FCTYPE_AUTH_SEND)
        .sgl(0, len, wire::SGL_IN_CAPSULE)
        .u8_at(41, spsp)
        .u8_at(42, spsp)
        .u8_at(43, secp)
        .u32_at(44, len)
}

pub fn send(s: &mut TcpStream, msg: Vec<u8>) -> u16 {
    let sqe = send_sqe(10, msg.len() as u32, 0xe9, 1);
    host::command(s, sqe, msg).0
}

/// AUTHENTICATION_RECV of up to `al` bytes: (status, the message).
pub fn recv(s: &mut TcpStream, al: u32) -> (u16, Vec<u8>) {
    let sqe = wire::Sqe::new(wire::OPC_FABRICS, 11)
        .u8_at(4, FCTYPE_AUTH_RECV)
        .sgl(0, al, wire::SGL_TRANSPORT)
        .u8_at(41, 1)
        .u8_at(42, 1)
        .u8_at(43, 0xe9)
        .u32_at(44, al);
    host::command_reading(s, sqe)
}

pub fn negotiate(tid: u16, hashes: &[u8], groups: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 8 + 64];
    m[4..6].copy_from_slice(&tid.to_le_bytes());
    m[7] = 1;
    m[8] = 1; // DH-HMAC-CHAP
    m[10] = hashes.len() as u8;
    m[11] = groups.len() as u8;
    m[12..12 + hashes.len()].copy_from_slice(hashes);
    m[42..42 + groups.len()].copy_from_slice(groups);
    m
}

/// HMAC(key, Ca || seq || tid || 0 || kind || nqn1 || 0 || nqn2), as 8.13.5.5 has it.
#[allow(clippy::too_many_arguments)]
fn chap_response(
    hash: HashFn,
    key: &[u8],
    challenge: &[u8],
    dh_secret: Option<&[u8]>,
    seq: u32,
    tid: u16,
    kind: &str,
    nqn1: &str,
    nqn2: &str,
) -> Vec<u8> {
    let ca = match dh_secret {
        Some(s) => hash.hmac(&hash.hash(s).unwrap(), &[challenge]).unwrap(),
        None => challenge.to_vec(),
    };
    let mut msg = ca;
    msg.extend_from_slice(&seq.to_le_bytes());
    msg.extend_from_slice(&tid.to_le_bytes());
    msg.push(0);
    msg.extend_from_slice(kind.as_bytes());
    msg.extend_from_slice(nqn1.as_bytes());
    msg.push(0);
    msg.extend_from_slice(nqn2.as_bytes());
    hash.hmac(key, &[&msg]).unwrap()
}

/// What a host does with a challenge.
pub struct Host<'a> {
    pub hostnqn: &'a str,
    pub subnqn: &'a str,
    pub key: Secret,
    /// The controller's key the host checks (bidirectional).
    pub ctrlr_key: Option<Secret>,
}

/// How a transaction ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Admitted,
    /// AUTH_Failure1 with this reason code explanation.
    Failure1(u8),
    /// The controller's response did not match the controller key.
    BadController,
}

impl Host<'_> {
    /// The reply to `challenge`, and what the controller must answer the
    /// host's own challenge with (bidirectional).
    pub fn reply(&self, challenge: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
        assert_eq!(
            &challenge[..2],
            &[1, 1],
            "not a challenge: {challenge:02x?}"
        );
        let tid = u16::from_le_bytes([challenge[4], challenge[5]]);
        let hl = challenge[6] as usize;
        let hash = HashFn::from_id(challenge[8]).unwrap();
        let group = DhGroup::from_id(challenge[9]).unwrap();
        let dhvlen = u16::from_le_bytes([challenge[10], challenge[11]]) as usize;
        let seq = u32::from_le_bytes(challenge[12..16].try_into().unwrap());
        let cval = &challenge[16..16 + hl];
        let (public, secret) = match group {
            DhGroup::Null => (Vec::new(), None),
            g => {
                // The secret by its definition, theirs^x mod p, padded.
                let dh = generate_key(g.openssl_nid().unwrap()).unwrap();
                let theirs = BigNum::from_slice(&challenge[16 + hl..16 + hl + dhvlen]).unwrap();
                let mut s = BigNum::new().unwrap();
                let mut ctx = openssl::bn::BigNumContext::new().unwrap();
                s.mod_exp(&theirs, dh.private_key(), dh.prime_p(), &mut ctx)
                    .unwrap();
                (
                    dh.public_key().to_vec_padded(dhvlen as i32).unwrap(),
                    Some(s.to_vec_padded(dhvlen as i32).unwrap()),
                )
            }
        };
        let key = self.key.key_for(self.hostnqn).unwrap();
        let rval = chap_response(
            hash,
            &key,
            cval,
            secret.as_deref(),
            seq,
            tid,
            "HostHost",
            self.hostnqn,
            self.subnqn,
        );
        let mine = vec![0xa5u8; hl];
        let host_seq = 4242u32;
        let expected = self.ctrlr_key.as_ref().map(|c| {
            let k = c.key_for(self.subnqn).unwrap();
            chap_response(
                hash,
                &k,
                &mine,
                secret.as_deref(),
                host_seq,
                tid,
                "Controller",
                self.subnqn,
                self.hostnqn,
            )
        });
        let mut m = vec![0u8; 16];
        m[0] = 1;
        m[1] = 2;
        m[4..6].copy_from_slice(&tid.to_le_bytes());
        m[6] = hl as u8;
        m[8] = expected.is_some() as u8;
        m[10..12].copy_from_slice(&(public.len() as u16).to_le_bytes());
        if expected.is_some() {
            m[12..16].copy_from_slice(&host_seq.to_le_bytes());
        }
        m.extend_from_slice(&rval);
        m.extend_from_slice(&mine);
        m.extend_from_slice(&public);
        (m, expected)
    }

    /// A whole transaction on queue `s` (Connect done), offering `hashes`
    /// and `groups`.
    pub fn authenticate(
        &self,
        s: &mut TcpStream,
        tid: u16,
        hashes: &[u8],
        groups: &[u8],
    ) -> Outcome {
        assert_eq!(send(s, negotiate(tid, hashes, groups)), 0, "AUTH_Negotiate");
        let (status, challenge) = recv(s, 4096);
        assert_eq!(status, 0, "AUTHENTICATION_RECV (challenge)");
        if challenge[1] == 0xf1 {
            return Outcome::Failure1(challenge[7]);
        }
        let (reply, expected) = self.reply(&challenge);
        assert_eq!(send(s, reply), 0, "DH-HMAC-CHAP_Reply");
        let (status, success1) = recv(s, 4096);
        assert_eq!(status, 0, "AUTHENTICATION_RECV (success1)");
        if success1[1] == 0xf1 {
            return Outcome::Failure1(success1[7]);
        }
        assert_eq!(success1[1], 3, "not a success1: {success1:02x?}");
        let Some(expected) = expected else {
            return Outcome::Admitted;
        };
        let tid_le = tid.to_le_bytes();
        let hl = success1[6] as usize;
        if success1[8] != 1 || success1[16..16 + hl] != expected[..] {
            let failure2 = vec![0, 0xf0, 0, 0, tid_le[0], tid_le[1], 1, 1];
            assert_eq!(send(s, failure2), 0, "AUTH_Failure2");
            return Outcome::BadController;
        }
        let mut success2 = vec![0u8; 16];
        success2[0] = 1;
        success2[1] = 4;
        success2[4..6].copy_from_slice(&tid_le);
        assert_eq!(send(s, success2), 0, "DH-HMAC-CHAP_Success2");
        Outcome::Admitted
    }
}
