//! The endpoint under hostile and idle HTTP clients, and scrapes close
//! together answered from one gathering.

use super::*;

#[test]
fn hostile_http_clients_stall_neither_the_reactor_nor_the_endpoint() {
    let _turn = beside_others();
    let metrics = test_port();
    let (t, _shm, port) = serve(metrics);
    // Clients that connect and send nothing, or a header without end.
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", metrics)).unwrap())
        .collect();
    let mut huge = TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    huge.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let junk = format!(
        "GET /metrics HTTP/1.1\r\nX-Junk: {}\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = huge.write_all(junk.as_bytes());
    // The reactor serves I/O meanwhile.
    let (iops, _) = perf(NQN, port, "randread", 1);
    assert!(iops > 1000.0, "{iops} IOPS beside hostile HTTP clients");
    // And a scrape still gets its answer: it does not wait for the hostile
    // clients' requests, which have 2 s to arrive.
    let at = Instant::now();
    let (status, body) = get(metrics, "/metrics", "*/*");
    assert!(status.contains("200 OK"), "{status}");
    assert!(body.contains("spdk_pmem_namespace_reads_completed_total"));
    assert!(
        at.elapsed() < Duration::from_secs(30),
        "the scrape took {:?}",
        at.elapsed()
    );
    idle.clear();
    let (status, _) = get(metrics, "/nothing", "*/*");
    assert!(status.contains("404"), "{status}");
    drop(t);
}

/// Many connections at once (400 from 127.0.0.1, sending nothing) cost the
/// target at most the [`OPEN_CLIENTS`] descriptors its endpoint waits on
/// (a newer one closes the oldest), and delay no scrape: one sent while
/// all of them are still open is answered (the endpoint answered one
/// connection at a time, so a scrape waited 2 s behind each idle one: this
/// one, behind 130 that the accept queue held, waited past `get`'s 30 s).
/// The reactor serves I/O meanwhile.
#[test]
fn many_idle_http_connections_hold_few_descriptors_and_delay_no_scrape() {
    let _turn = beside_others();
    let metrics = test_port();
    let (t, _shm, port) = serve(metrics);
    let pid = t.child.as_ref().unwrap().id();
    let before = footprint(pid);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics));
    // Up to 400, or until the kernel's queue is full and a connect waits.
    let held: Vec<TcpStream> = (0..400)
        .map_while(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    assert!(held.len() >= 100, "only {} connections", held.len());
    let bound = before.fds + OPEN_CLIENTS + 2;
    let during = footprint(pid);
    assert!(
        during.fds <= bound,
        "{} connections held: {} descriptors, {} before",
        held.len(),
        during.fds,
        before.fds
    );
    let (status, body) = get(metrics, "/metrics", "*/*");
    assert!(
        status.contains("200 OK"),
        "a scrape beside {} idle connections: {status}",
        held.len()
    );
    assert!(body.contains("spdk_pmem_namespace_reads_completed_total"));
    let (iops, _) = perf(NQN, port, "randread", 1);
    assert!(
        iops > 1000.0,
        "{iops} IOPS beside {} connections",
        held.len()
    );
    eprintln!(
        "{} connections held: target descriptors {} (before {}), {iops:.0} IOPS",
        held.len(),
        during.fds,
        before.fds
    );
    let after = footprint(pid);
    assert!(after.fds <= bound, "{after:?} against {before:?}");
    drop(held);
    let (status, _) = get(metrics, "/metrics", "*/*");
    assert!(status.contains("200 OK"), "{status}");
    drop(t);
}

/// Review F10: each scrape made the application thread gather everything
/// again, so a client asking back to back kept it busy. One gathering now
/// answers every scrape for `GATHERED_FOR`: two scrapes within it get the
/// same text (the reactors' busy and idle seconds move between any
/// two gatherings), and one after it a new text.
#[test]
fn back_to_back_scrapes_are_answered_from_one_gathering() {
    let _turn = beside_others();
    use spdk_pmem::metrics::http::GATHERED_FOR;
    let metrics = test_port();
    let addr = format!("127.0.0.1:{metrics}");
    let _t = Target::start(&our_nvmf_tgt(), &["--metrics", &addr]);
    let scrape = || {
        let (status, body) = get(metrics, "/metrics", "*/*");
        assert!(status.contains("200"), "{status}");
        assert!(body.contains("spdk_pmem_reactor_seconds"), "{body}");
        body
    };
    // A pair that came within the window (a slow moment may take longer).
    let mut pair = None;
    for _ in 0..20 {
        std::thread::sleep(GATHERED_FOR * 2);
        let started = Instant::now();
        let (first, second) = (scrape(), scrape());
        if started.elapsed() < GATHERED_FOR {
            pair = Some((first, second));
            break;
        }
    }
    let (first, second) = pair.expect("no two scrapes within the window in 20 tries");
    assert!(
        first == second,
        "two scrapes within {GATHERED_FOR:?} were gathered apart"
    );
    std::thread::sleep(GATHERED_FOR * 2);
    assert!(
        scrape() != second,
        "a scrape after the window got the old text"
    );
}
