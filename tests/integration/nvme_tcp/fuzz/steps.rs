//! The PDU of each step of the plan, and what a step must get back.

use super::*;

impl Session<'_> {
    /// The PDUs of one step of the plan (for steps that have exactly one
    /// PDU to send before waiting), already built for the connection.
    pub(super) fn pdu_of(&mut self, conn: u8, step: Step, cid: u16) -> Pdu {
        let (dg, cpda) = self.dg(conn);
        let bs = self.setup.block_size;
        match step {
            Step::IcReq => {
                let want = Digests {
                    header: self.rng.chance(50),
                    data: self.rng.chance(50),
                };
                wire::icreq(0, 0, want, 0)
            }
            Step::Connect => {
                let (qid, cntlid) = if conn == 0 {
                    (0, 0xFFFF)
                } else {
                    (1, self.cntlid)
                };
                let (sqe, data) =
                    wire::connect(cid, qid, 31, 0, cntlid, &self.nqn.clone(), HOSTNQN);
                wire::capsule(&sqe.0, data, dg, cpda)
            }
            Step::EnableController => wire::capsule(
                &wire::property_set(cid, wire::CC_OFFSET, wire::CC_ENABLE).0,
                vec![],
                dg,
                cpda,
            ),
            Step::ReadStatus => wire::capsule(
                &wire::property_get(cid, wire::CSTS_OFFSET).0,
                vec![],
                dg,
                cpda,
            ),
            Step::IdentifyController => {
                wire::capsule(&wire::identify(cid, 1, 0).0, vec![], dg, cpda)
            }
            Step::IdentifyNamespace => {
                wire::capsule(&wire::identify(cid, 0, 1).0, vec![], dg, cpda)
            }
            Step::WriteInCapsule => {
                let data = self.pattern(self.lba, 1);
                let sqe = wire::rw(
                    wire::OPC_WRITE,
                    cid,
                    1,
                    self.lba,
                    1,
                    bs,
                    wire::SGL_IN_CAPSULE,
                );
                wire::capsule(&sqe.0, data, dg, cpda)
            }
            Step::WriteByR2t | Step::ReadBack => {
                let blocks = (self.written.len() as u32 / bs).max(1);
                let opc = if step == Step::ReadBack {
                    wire::OPC_READ
                } else {
                    wire::OPC_WRITE
                };
                let sqe = wire::rw(
                    opc,
                    cid,
                    1,
                    self.lba + 1,
                    blocks,
                    blocks * bs,
                    wire::SGL_TRANSPORT,
                );
                wire::capsule(&sqe.0, vec![], dg, cpda)
            }
            Step::Flush => {
                wire::capsule(&Sqe::new(wire::OPC_FLUSH, cid).nsid(1).0, vec![], dg, cpda)
            }
        }
    }

    /// Block contents unique to this session and LBA.
    pub(super) fn pattern(&self, lba: u64, blocks: u32) -> Vec<u8> {
        let mut r = Rng::new(self.transcript.seed ^ lba.rotate_left(17));
        r.bytes((blocks * self.setup.block_size) as usize)
    }

    /// After sending a step's first PDU: the rest of its exchange.
    pub(super) fn finish_step(
        &mut self,
        conn: u8,
        step: Step,
        cid: u16,
        sent: &Pdu,
    ) -> Result<(), String> {
        match step {
            Step::IcReq => {
                let resp = self.expect(conn, "ICReq", |p| p.ty == wire::ICRESP)?;
                let dgst = resp.raw.get(11).copied().unwrap_or(0);
                let c = self.conn(conn)?;
                c.cpda = resp.raw.get(10).copied().unwrap_or(0);
                c.dg = Digests {
                    header: dgst & 1 != 0,
                    data: dgst & 2 != 0,
                };
                let asked = sent.psh.get(3).copied().unwrap_or(0);
                if !self.mutated && dgst != asked {
                    return Err(format!("ICResp digests {dgst:#x}, asked for {asked:#x}"));
                }
                Ok(())
            }
            Step::Connect => {
                let rsp = self.completion(conn, cid, "Connect")?;
                if conn == 0 {
                    self.cntlid = rsp.u16_at(8);
                }
                Ok(())
            }
            Step::EnableController | Step::Flush => {
                let what = format!("{step:?}");
                let r = self.completion(conn, cid, &what);
                // SPDK 20.07's pmem bdev does not support FLUSH; its status
                // is an answer all the same.
                if step == Step::Flush {
                    return match r {
                        Err(e) if e.contains("status") => Ok(()),
                        other => other.map(|_| ()),
                    };
                }
                r.map(|_| ())
            }
            Step::ReadStatus => {
                let rsp = self.completion(conn, cid, "Property Get CSTS")?;
                if !self.mutated && rsp.u32_at(8) & 1 == 0 {
                    return Err("CSTS.RDY is 0 after CC.EN was set".into());
                }
                Ok(())
            }
            Step::IdentifyController | Step::IdentifyNamespace | Step::ReadBack => {
                let data = self.read_data(conn, cid, step)?;
                if step == Step::ReadBack && !self.mutated {
                    let mut want = self.pattern(self.lba, 1);
                    want.extend_from_slice(&self.written);
                    let got_first = &data[..];
                    // The read covers the R2T-written blocks; the in-capsule
                    // block is compared by a second read of it.
                    if got_first != &want[self.setup.block_size as usize..] {
                        let at = got_first
                            .iter()
                            .zip(&want[self.setup.block_size as usize..])
                            .position(|(a, b)| a != b);
                        return Err(format!("read back differs from what was written (first difference at byte {at:?})"));
                    }
                    self.check_block(conn, want[..self.setup.block_size as usize].to_vec())?;
                }
                // Identify Controller: the serial number is bytes 4..24.
                if step == Step::IdentifyController
                    && !self.mutated
                    && !data.get(4..24).is_some_and(|sn| sn.starts_with(b"SPDK-FZ"))
                {
                    return Err(
                        "Identify Controller data lacks the subsystem's serial number".into(),
                    );
                }
                Ok(())
            }
            Step::WriteInCapsule => self.completion(conn, cid, "Write (in-capsule)").map(|_| ()),
            Step::WriteByR2t => self.h2c_transfer(conn, cid),
        }
    }
}
