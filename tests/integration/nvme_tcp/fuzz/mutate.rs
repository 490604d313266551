//! The mutations: a field, bytes, a digest, or a PDU of random bytes.

use super::*;

impl Session<'_> {
    /// Mutates `pdu` in place (field, bytes or digest kinds) and returns the
    /// bytes to send.
    pub(super) fn mutate(&mut self, pdu: &mut Pdu, m: Mutation) -> Vec<u8> {
        match m {
            Mutation::Field => {
                self.mutate_field(pdu);
                if self.rng.chance(70) {
                    pdu.redigest();
                }
                pdu.encode()
            }
            Mutation::Bytes => {
                let mut b = pdu.encode();
                for _ in 0..self.rng.range(1, 4) {
                    let i = self.rng.below(b.len() as u64) as usize;
                    b[i] = self.rng.next_u64() as u8;
                }
                b
            }
            Mutation::Digest => {
                if pdu.hdgst.is_some() && (pdu.ddgst.is_none() || self.rng.chance(50)) {
                    pdu.hdgst = Some(self.rng.bytes(4).try_into().unwrap());
                } else if pdu.ddgst.is_some() {
                    pdu.ddgst = Some(self.rng.bytes(4).try_into().unwrap());
                } else {
                    // No digest negotiated: claim one in the flags.
                    pdu.flags |= *self.rng.pick(&[wire::FLAG_HDGSTF, wire::FLAG_DDGSTF]);
                }
                pdu.encode()
            }
            _ => pdu.encode(),
        }
    }

    /// Sets one field of the common header or of the PDU-specific header.
    pub(super) fn mutate_field(&mut self, pdu: &mut Pdu) {
        if self.rng.chance(35) {
            match self.rng.below(5) {
                0 => pdu.ty = self.rng.interesting(8) as u8,
                1 => pdu.flags = self.rng.interesting(8) as u8,
                2 => pdu.hlen = self.rng.interesting(8) as u8,
                3 => pdu.pdo = self.rng.interesting(8) as u8,
                _ => pdu.plen = self.rng.interesting(32) as u32,
            }
            return;
        }
        // (offset in the PSH, width) of the fields each PDU type has.
        let fields: &[(usize, usize)] = match pdu.ty {
            wire::ICREQ => &[(0, 2), (2, 1), (3, 1), (4, 4)],
            wire::CAPSULE_CMD => &[
                (0, 1),
                (1, 1),
                (2, 2),
                (4, 4),
                (24, 8),
                (32, 4),
                (39, 1),
                (40, 4),
                (42, 2),
                (44, 4),
                (46, 1),
                (48, 4),
                (52, 4),
                (56, 4),
                (60, 4),
            ],
            wire::H2C_DATA => &[(0, 2), (2, 2), (4, 4), (8, 4)],
            _ => &[(0, 2), (2, 4)],
        };
        let (off, width) = *self.rng.pick(fields);
        if off + width > pdu.psh.len() {
            return;
        }
        let v = self.rng.interesting(width as u32 * 8).to_le_bytes();
        pdu.psh[off..off + width].copy_from_slice(&v[..width]);
        // Connect data: the controller id or a byte of the NQNs.
        if !pdu.data.is_empty() && pdu.data.len() >= 1024 && self.rng.chance(40) {
            let i = *self
                .rng
                .pick(&[16usize, 17, 256, 300, 511, 512, 600, 767, 768]);
            pdu.data[i] = self.rng.interesting(8) as u8;
            if pdu.ddgst.is_some() {
                pdu.ddgst = Some(wire::crc32c(&pdu.data).to_le_bytes());
            }
        }
    }

    pub(super) fn random_pdu(&mut self) -> Vec<u8> {
        let body_len = self.rng.below(512) as usize;
        let ty = if self.rng.chance(70) {
            *self.rng.pick(&[
                wire::ICREQ,
                wire::H2C_TERM_REQ,
                wire::CAPSULE_CMD,
                wire::H2C_DATA,
                wire::ICRESP,
                wire::C2H_DATA,
                wire::R2T,
            ])
        } else {
            self.rng.next_u64() as u8
        };
        let hlen = if self.rng.chance(50) {
            *self.rng.pick(&[8u8, 24, 72, 128])
        } else {
            self.rng.next_u64() as u8
        };
        let plen = if self.rng.chance(50) {
            (8 + body_len) as u32
        } else {
            self.rng.interesting(32) as u32
        };
        let mut b = vec![
            ty,
            self.rng.next_u64() as u8,
            hlen,
            self.rng.interesting(8) as u8,
        ];
        b.extend_from_slice(&plen.to_le_bytes());
        b.extend(self.rng.bytes(body_len));
        b
    }
}
