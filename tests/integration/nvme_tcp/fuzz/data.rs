//! A checked session's data: the block written, read back and compared,
//! and the R2T / H2CData transfer.

use super::*;

impl Session<'_> {
    /// Reads the in-capsule block back (cid 0x7000) and compares it.
    pub(super) fn check_block(&mut self, conn: u8, want: Vec<u8>) -> Result<(), String> {
        let (dg, cpda) = self.dg(conn);
        let bs = self.setup.block_size;
        let sqe = wire::rw(
            wire::OPC_READ,
            0x7000,
            1,
            self.lba,
            1,
            bs,
            wire::SGL_TRANSPORT,
        );
        self.send(conn, &wire::capsule(&sqe.0, vec![], dg, cpda))?;
        let data = self.read_data(conn, 0x7000, Step::ReadBack)?;
        if data != want {
            return Err("the in-capsule block read back differs from what was written".into());
        }
        Ok(())
    }

    /// Collects the C2HData of command `cid` (and its response, unless the
    /// last PDU carried SUCCESS).
    pub(super) fn read_data(&mut self, conn: u8, cid: u16, step: Step) -> Result<Vec<u8>, String> {
        let (dg, _) = self.dg(conn);
        let mut data = Vec::new();
        loop {
            let what = format!("{step:?} data");
            let p = self.expect(conn, &what, |p| {
                (p.ty == wire::C2H_DATA && p.c2h().0 == cid)
                    || (p.ty == wire::CAPSULE_RESP && p.cqe().0 == cid)
            })?;
            if p.ty == wire::CAPSULE_RESP {
                let status = p.cqe().1;
                if status != 0 {
                    return Err(format!("{step:?}: status {status:#x}"));
                }
                return Ok(data);
            }
            let (_, datao, datal) = p.c2h();
            let chunk = p.data(dg);
            if !self.mutated && (datao as usize != data.len() || datal as usize != chunk.len()) {
                return Err(format!("{step:?}: C2HData at {datao} of {datal} bytes, expected offset {} ({} bytes came)", data.len(), chunk.len()));
            }
            data.extend_from_slice(chunk);
            if p.flags & wire::FLAG_LAST_PDU != 0 && p.flags & wire::FLAG_SUCCESS != 0 {
                return Ok(data);
            }
        }
    }

    /// Answers R2Ts for command `cid` with H2CData in random-sized pieces.
    pub(super) fn h2c_transfer(&mut self, conn: u8, cid: u16) -> Result<(), String> {
        let total = self.written.len() as u32;
        let mut sent_to = 0u32;
        while sent_to < total {
            let r2t = self.expect(conn, "R2T", |p| p.ty == wire::R2T && p.r2t().0 == cid)?;
            let (_, ttag, r2to, r2tl) = r2t.r2t();
            if !self.mutated && (r2to != sent_to || r2tl == 0 || r2to + r2tl > total) {
                return Err(format!(
                    "R2T for offset {r2to} length {r2tl}, {sent_to} of {total} sent"
                ));
            }
            let end = r2to.saturating_add(r2tl).min(total);
            let mut off = r2to.min(end);
            while off < end {
                let n = (self.rng.range(1, 8) as u32 * 1024).min(end - off);
                let (dg, _) = self.dg(conn);
                let last = off + n == end;
                let pdu = wire::h2c_data(
                    cid,
                    ttag,
                    off,
                    self.written[off as usize..(off + n) as usize].to_vec(),
                    last,
                    dg,
                );
                self.send(conn, &pdu)?;
                off += n;
            }
            sent_to = end;
            if r2tl == 0 {
                break;
            }
        }
        self.completion(conn, cid, "Write (R2T)").map(|_| ())
    }
}
