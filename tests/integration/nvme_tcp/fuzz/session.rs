//! A session's connections: sending, waiting for and checking PDUs.

use super::*;

impl<'a> Session<'a> {
    pub(super) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.setup.port))
    }

    pub(super) fn wait_time(&self) -> Duration {
        if self.mutated {
            Duration::from_millis(40)
        } else {
            Duration::from_secs(10)
        }
    }

    pub(super) fn conn(&mut self, index: u8) -> Result<&mut Conn, String> {
        let i = index as usize;
        if self.conns[i].is_none() {
            let stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(5))
                .map_err(|e| format!("connect to {}: {e}", self.addr()))?;
            stream.set_nodelay(true).ok();
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            self.conns[i] = Some(Conn {
                stream,
                rx: Vec::new(),
                closed: false,
                dg: Digests::default(),
                cpda: 0,
            });
        }
        Ok(self.conns[i].as_mut().unwrap())
    }

    /// Sends bytes on connection `index` (whole, or in small slow pieces).
    pub(super) fn send_raw(&mut self, index: u8, bytes: Vec<u8>) -> Result<(), String> {
        let slow = self.slow;
        let mut pieces: Vec<(usize, u64)> = Vec::new();
        if slow {
            // A few dozen small pieces, then the rest at once: slow enough
            // to split every header, bounded in time.
            let mut off = 0;
            while off < bytes.len() {
                let n = if pieces.len() < 32 {
                    self.rng.range(1, 16) as usize
                } else {
                    bytes.len() - off
                };
                pieces.push((n.min(bytes.len() - off), self.rng.below(2)));
                off += n;
            }
        }
        self.stats
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.transcript.sent.push(Sent {
            conn: index,
            bytes: bytes.clone(),
        });
        let conn = self.conn(index)?;
        if conn.closed {
            return Err("connection closed by the target".into());
        }
        let result = if slow {
            let mut off = 0;
            let mut r = Ok(());
            for (n, ms) in pieces {
                r = conn.stream.write_all(&bytes[off..off + n]);
                if r.is_err() {
                    break;
                }
                off += n;
                std::thread::sleep(Duration::from_millis(ms));
            }
            r
        } else {
            conn.stream.write_all(&bytes)
        };
        result.map_err(|e| {
            conn.closed = true;
            why_failed(e)
        })
    }

    pub(super) fn send(&mut self, index: u8, pdu: &Pdu) -> Result<(), String> {
        self.stats.pdus.fetch_add(1, Ordering::Relaxed);
        self.send_raw(index, pdu.encode())
    }

    /// Reads until a PDU that `want` accepts arrives (others are dropped).
    pub(super) fn wait(&mut self, index: u8, want: impl Fn(&RxPdu) -> bool) -> Wait {
        let deadline = Instant::now() + self.wait_time();
        let Ok(conn) = self.conn(index) else {
            return Wait::Closed;
        };
        loop {
            match wire::take_pdu(&mut conn.rx) {
                Err(e) => return Wait::Nonsense(e),
                Ok(Some(p)) if p.ty == wire::C2H_TERM_REQ => return Wait::TermReq(p.u16_at(8)),
                Ok(Some(p)) if want(&p) => return Wait::Got(p),
                Ok(Some(_)) => continue,
                Ok(None) => {}
            }
            if conn.closed {
                return Wait::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wait::TimedOut;
            }
            conn.stream.set_read_timeout(Some(deadline - now)).ok();
            let mut buf = [0u8; 65536];
            match conn.stream.read(&mut buf) {
                Ok(0) => conn.closed = true,
                Ok(n) => conn.rx.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Wait::TimedOut
                }
                Err(_) => conn.closed = true,
            }
        }
    }

    pub(super) fn expect(
        &mut self,
        index: u8,
        what: &str,
        want: impl Fn(&RxPdu) -> bool,
    ) -> Result<RxPdu, String> {
        match self.wait(index, want) {
            Wait::Got(p) => Ok(p),
            Wait::Closed => Err(format!("{what}: the target closed the connection")),
            Wait::TimedOut => Err(format!("{what}: no answer within {:?}", self.wait_time())),
            Wait::TermReq(fes) => Err(format!("{what}: C2HTermReq, FES {fes:#x}")),
            Wait::Nonsense(e) => Err(format!("{what}: {e}")),
        }
    }

    /// Waits for command `cid`'s response; its status must be success.
    pub(super) fn completion(&mut self, index: u8, cid: u16, what: &str) -> Result<RxPdu, String> {
        let rsp = self.expect(index, what, |p| {
            p.ty == wire::CAPSULE_RESP && p.cqe().0 == cid
        })?;
        let status = rsp.cqe().1;
        if status != 0 {
            return Err(format!(
                "{what}: status {status:#x} (SCT {}, SC {:#x})",
                status >> 8,
                status & 0xff
            ));
        }
        Ok(rsp)
    }

    pub(super) fn dg(&self, index: u8) -> (Digests, u8) {
        match &self.conns[index as usize] {
            Some(c) => (c.dg, c.cpda),
            None => (Digests::default(), 0),
        }
    }

    pub(super) fn close(&mut self, index: u8) {
        if let Some(c) = self.conns[index as usize].take() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}
