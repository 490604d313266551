//! The NVMe/TCP wire format (NVMe-oF TCP transport binding, TP 8000) as a
//! host sends and receives it: PDUs with their common header, header and data
//! digests, and the 64-byte submission queue entries the fuzzer puts in
//! capsules. Fields are written as given, never recomputed at encode time, so
//! a mutated length, offset or digest reaches the target as it was mutated.

/// PDU types.
pub const ICREQ: u8 = 0x00;
pub const ICRESP: u8 = 0x01;
pub const H2C_TERM_REQ: u8 = 0x02;
pub const C2H_TERM_REQ: u8 = 0x03;
pub const CAPSULE_CMD: u8 = 0x04;
pub const CAPSULE_RESP: u8 = 0x05;
pub const H2C_DATA: u8 = 0x06;
pub const C2H_DATA: u8 = 0x07;
pub const R2T: u8 = 0x09;

/// Common-header flags.
pub const FLAG_HDGSTF: u8 = 0x01;
pub const FLAG_DDGSTF: u8 = 0x02;
pub const FLAG_LAST_PDU: u8 = 0x04;
pub const FLAG_SUCCESS: u8 = 0x08;

/// Header lengths (common header included).
pub const ICREQ_HLEN: u8 = 128;
pub const DATA_HLEN: u8 = 24;
pub const TERM_REQ_HLEN: u8 = 24;

/// SGL descriptor types: in-capsule data (data block, offset) and a host
/// buffer the target reaches by R2T or C2HData (transport data block).
pub const SGL_IN_CAPSULE: u8 = 0x01;
pub const SGL_TRANSPORT: u8 = 0x5A;

/// Fabrics and NVMe opcodes used in the well-formed sequence.
pub const OPC_FABRICS: u8 = 0x7F;
pub const FCTYPE_PROPERTY_SET: u8 = 0x00;
pub const FCTYPE_CONNECT: u8 = 0x01;
pub const FCTYPE_PROPERTY_GET: u8 = 0x04;
pub const OPC_IDENTIFY: u8 = 0x06;
pub const OPC_GET_LOG_PAGE: u8 = 0x02;
pub const OPC_WRITE: u8 = 0x01;
pub const OPC_READ: u8 = 0x02;
pub const OPC_FLUSH: u8 = 0x00;

/// SQE flags: PSDT = 01b, data described by SGLs (required over fabrics).
pub const SQE_FLAGS_SGL: u8 = 0x40;

/// Digest settings of a connection, as negotiated by ICReq/ICResp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

pub use crate::common::crc32c::crc32c;

/// One PDU as it will go on the wire. `build` fills every field consistently;
/// the fuzzer may then change any of them before `encode`.
#[derive(Clone, Debug)]
pub struct Pdu {
    pub ty: u8,
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: u32,
    /// The PDU-specific header: bytes 8..hlen.
    pub psh: Vec<u8>,
    pub hdgst: Option<[u8; 4]>,
    /// Zero bytes between the header (and its digest) and the data (PDO).
    pub pad: usize,
    pub data: Vec<u8>,
    pub ddgst: Option<[u8; 4]>,
}

impl Pdu {
    /// A well-formed PDU of type `ty`: header digest on capsules and data
    /// PDUs when negotiated, data digest on their data, data at the PDO that
    /// the controller's data alignment (`cpda`) asks for.
    pub fn build(ty: u8, mut flags: u8, psh: Vec<u8>, data: Vec<u8>, dg: Digests, cpda: u8) -> Pdu {
        let hlen = (8 + psh.len()) as u8;
        let digest_types = matches!(ty, CAPSULE_CMD | H2C_DATA);
        let with_hdgst = dg.header && digest_types;
        let with_ddgst = dg.data && digest_types && !data.is_empty();
        if with_hdgst {
            flags |= FLAG_HDGSTF;
        }
        if with_ddgst {
            flags |= FLAG_DDGSTF;
        }
        let header_end = hlen as usize + if with_hdgst { 4 } else { 0 };
        let (pdo, pad) = if data.is_empty() {
            (0, 0)
        } else {
            let align = (cpda as usize + 1) * 4;
            let pdo = header_end.div_ceil(align) * align;
            (pdo, pdo - header_end)
        };
        let plen = if data.is_empty() {
            header_end
        } else {
            pdo + data.len() + if with_ddgst { 4 } else { 0 }
        };
        let mut pdu = Pdu {
            ty,
            flags,
            hlen,
            pdo: pdo.min(255) as u8,
            plen: plen as u32,
            psh,
            hdgst: None,
            pad,
            ddgst: with_ddgst.then(|| crc32c(&data).to_le_bytes()),
            data,
        };
        if with_hdgst {
            pdu.hdgst = Some(crc32c(&pdu.header()).to_le_bytes());
        }
        pdu
    }

    /// Common header and PDU-specific header, as the header digest covers them.
    pub fn header(&self) -> Vec<u8> {
        let mut h = vec![self.ty, self.flags, self.hlen, self.pdo];
        h.extend_from_slice(&self.plen.to_le_bytes());
        h.extend_from_slice(&self.psh);
        h
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.header();
        if let Some(d) = self.hdgst {
            b.extend_from_slice(&d);
        }
        b.resize(b.len() + self.pad, 0);
        b.extend_from_slice(&self.data);
        if let Some(d) = self.ddgst {
            b.extend_from_slice(&d);
        }
        b
    }

    /// Recomputes the digests after a change to the header or the data, for
    /// mutations meant to get past the digest check.
    pub fn redigest(&mut self) {
        if self.hdgst.is_some() {
            self.hdgst = Some(crc32c(&self.header()).to_le_bytes());
        }
        if self.ddgst.is_some() {
            self.ddgst = Some(crc32c(&self.data).to_le_bytes());
        }
    }
}

/// ICReq: protocol format version, host PDU data alignment, digests, MAXR2T.
pub fn icreq(pfv: u16, hpda: u8, dg: Digests, maxr2t: u32) -> Pdu {
    let mut psh = vec![0u8; ICREQ_HLEN as usize - 8];
    psh[0..2].copy_from_slice(&pfv.to_le_bytes());
    psh[2] = hpda;
    psh[3] = dg.header as u8 | (dg.data as u8) << 1;
    psh[4..8].copy_from_slice(&maxr2t.to_le_bytes());
    Pdu::build(ICREQ, 0, psh, Vec::new(), Digests::default(), 0)
}

/// A command capsule: the SQE and its in-capsule data, if any.
pub fn capsule(sqe: &[u8; 64], data: Vec<u8>, dg: Digests, cpda: u8) -> Pdu {
    Pdu::build(CAPSULE_CMD, 0, sqe.to_vec(), data, dg, cpda)
}

/// H2CData for the R2T (`cccid`, `ttag`): `data` at offset `datao`.
pub fn h2c_data(cccid: u16, ttag: u16, datao: u32, data: Vec<u8>, last: bool, dg: Digests) -> Pdu {
    let mut psh = vec![0u8; DATA_HLEN as usize - 8];
    psh[0..2].copy_from_slice(&cccid.to_le_bytes());
    psh[2..4].copy_from_slice(&ttag.to_le_bytes());
    psh[4..8].copy_from_slice(&datao.to_le_bytes());
    psh[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
    let flags = if last { FLAG_LAST_PDU } else { 0 };
    Pdu::build(H2C_DATA, flags, psh, data, dg, 0)
}

/// H2CTermReq: the host ends the connection, with a fatal error status and
/// the offending header as error data.
pub fn h2c_term_req(fes: u16, fei: u32, error_data: Vec<u8>) -> Pdu {
    let mut psh = vec![0u8; TERM_REQ_HLEN as usize - 8];
    psh[0..2].copy_from_slice(&fes.to_le_bytes());
    psh[2..6].copy_from_slice(&fei.to_le_bytes());
    let mut pdu = Pdu::build(H2C_TERM_REQ, 0, psh, Vec::new(), Digests::default(), 0);
    // Term requests carry their error data right after the header.
    pdu.plen += error_data.len() as u32;
    pdu.data = error_data;
    pdu
}

/// A 64-byte submission queue entry.
#[derive(Clone, Copy, Debug)]
pub struct Sqe(pub [u8; 64]);

impl Sqe {
    pub fn new(opcode: u8, cid: u16) -> Sqe {
        let mut b = [0u8; 64];
        b[0] = opcode;
        b[1] = SQE_FLAGS_SGL;
        b[2..4].copy_from_slice(&cid.to_le_bytes());
        Sqe(b)
    }

    pub fn u8_at(mut self, off: usize, v: u8) -> Sqe {
        self.0[off] = v;
        self
    }

    pub fn u16_at(mut self, off: usize, v: u16) -> Sqe {
        self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32_at(mut self, off: usize, v: u32) -> Sqe {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64_at(mut self, off: usize, v: u64) -> Sqe {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
        self
    }

    pub fn nsid(self, nsid: u32) -> Sqe {
        self.u32_at(4, nsid)
    }

    /// SGL1 (bytes 24..40): address, length, descriptor type.
    pub fn sgl(self, address: u64, length: u32, ty: u8) -> Sqe {
        self.u64_at(24, address).u32_at(32, length).u8_at(39, ty)
    }

    pub fn cdw(self, n: usize, v: u32) -> Sqe {
        self.u32_at(4 * n, v)
    }
}

/// Fabrics Connect: queue `qid` of `sqsize + 1` entries, controller `cntlid`
/// (0xFFFF: a new one), and its 1024-byte data (host id, NQNs).
pub fn connect(
    cid: u16,
    qid: u16,
    sqsize: u16,
    kato_ms: u32,
    cntlid: u16,
    subnqn: &str,
    hostnqn: &str,
) -> (Sqe, Vec<u8>) {
    let sqe = Sqe::new(OPC_FABRICS, cid)
        .u8_at(4, FCTYPE_CONNECT)
        .sgl(0, 1024, SGL_IN_CAPSULE)
        .u16_at(42, qid)
        .u16_at(44, sqsize)
        .u32_at(48, kato_ms);
    let mut data = vec![0u8; 1024];
    data[0..16].copy_from_slice(b"spdk-pmem-fuzzer");
    data[16..18].copy_from_slice(&cntlid.to_le_bytes());
    data[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
    data[512..512 + hostnqn.len()].copy_from_slice(hostnqn.as_bytes());
    (sqe, data)
}

/// Fabrics Property Set of a 4-byte property.
pub fn property_set(cid: u16, offset: u32, value: u64) -> Sqe {
    Sqe::new(OPC_FABRICS, cid)
        .u8_at(4, FCTYPE_PROPERTY_SET)
        .u8_at(40, 0)
        .u32_at(44, offset)
        .u64_at(48, value)
}

/// Fabrics Property Get of a 4-byte property.
pub fn property_get(cid: u16, offset: u32) -> Sqe {
    Sqe::new(OPC_FABRICS, cid)
        .u8_at(4, FCTYPE_PROPERTY_GET)
        .u8_at(40, 0)
        .u32_at(44, offset)
}

/// Controller Configuration: enabled, 64-byte SQEs, 16-byte CQEs.
pub const CC_OFFSET: u32 = 0x14;
pub const CC_ENABLE: u64 = 1 | (6 << 16) | (4 << 20);
pub const CSTS_OFFSET: u32 = 0x1c;

/// Identify (`cns` 1: controller, 0: namespace `nsid`) into a 4 KiB host buffer.
pub fn identify(cid: u16, cns: u32, nsid: u32) -> Sqe {
    Sqe::new(OPC_IDENTIFY, cid)
        .nsid(nsid)
        .sgl(0, 4096, SGL_TRANSPORT)
        .cdw(10, cns)
}

/// Read or Write of `blocks` blocks at `lba` of namespace `nsid`, with the
/// data described by `sgl_len` and `sgl_type`.
pub fn rw(
    opcode: u8,
    cid: u16,
    nsid: u32,
    lba: u64,
    blocks: u32,
    sgl_len: u32,
    sgl_type: u8,
) -> Sqe {
    Sqe::new(opcode, cid)
        .nsid(nsid)
        .sgl(0, sgl_len, sgl_type)
        .cdw(10, lba as u32)
        .cdw(11, (lba >> 32) as u32)
        .cdw(12, blocks - 1)
}

/// A PDU the target sent, split into its parts.
#[derive(Clone, Debug)]
pub struct RxPdu {
    pub ty: u8,
    pub flags: u8,
    pub pdo: u8,
    pub raw: Vec<u8>,
}

impl RxPdu {
    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.raw[off], self.raw[off + 1]])
    }

    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.raw[off..off + 4].try_into().unwrap())
    }

    /// The data of a C2HData PDU (between PDO and the data digest).
    pub fn data(&self, dg: Digests) -> &[u8] {
        let end = self.raw.len() - if dg.data && self.ty == C2H_DATA { 4 } else { 0 };
        let start = (self.pdo as usize).min(end);
        &self.raw[start..end]
    }

    /// A capsule response's command id and status (phase bit dropped).
    pub fn cqe(&self) -> (u16, u16) {
        (self.u16_at(20), self.u16_at(22) >> 1)
    }

    /// C2HData: (command id, data offset, data length).
    pub fn c2h(&self) -> (u16, u32, u32) {
        (self.u16_at(8), self.u32_at(12), self.u32_at(16))
    }

    /// R2T: (command id, transfer tag, offset, length).
    pub fn r2t(&self) -> (u16, u16, u32, u32) {
        (
            self.u16_at(8),
            self.u16_at(10),
            self.u32_at(12),
            self.u32_at(16),
        )
    }
}

/// Takes one whole PDU off the front of `buf`, if one has arrived. A PDU
/// length the target could not mean (below 8 or above 1 MiB) is an error.
pub fn take_pdu(buf: &mut Vec<u8>) -> Result<Option<RxPdu>, String> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let plen = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if !(8..=(1 << 20)).contains(&plen) {
        return Err(format!(
            "target sent a PDU header with PLEN {plen}: {:02x?}",
            &buf[..8]
        ));
    }
    if buf.len() < plen as usize {
        return Ok(None);
    }
    let raw: Vec<u8> = buf.drain(..plen as usize).collect();
    Ok(Some(RxPdu {
        ty: raw[0],
        flags: raw[1],
        pdo: raw[3],
        raw,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // RFC 3720 B.4 / the CRC catalogue's check value for CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_capsule_with_digests_has_consistent_lengths() {
        let dg = Digests {
            header: true,
            data: true,
        };
        let pdu = capsule(&Sqe::new(OPC_WRITE, 1).0, vec![7; 512], dg, 0);
        let b = pdu.encode();
        assert_eq!(b.len() as u32, pdu.plen);
        assert_eq!(pdu.pdo, 76);
        assert_eq!(b[1], FLAG_HDGSTF | FLAG_DDGSTF);
        assert_eq!(&b[72..76], &crc32c(&b[..72]).to_le_bytes());
    }
}
