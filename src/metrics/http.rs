//! The HTTP side: one thread that answers `GET /metrics`, off the
//! reactors. It waits for up to [`OPEN_CLIENTS`] requests at once with
//! `poll`, so a client that connects and sends nothing delays no other:
//! the first complete request is answered first. What a client may cost is
//! bounded: a request has [`REQUEST_LIMIT`] to arrive in at most
//! [`REQUEST_BYTES`] (slow or endless headers are cut off), a newer client
//! past [`OPEN_CLIENTS`] closes the oldest waiting one (which had the most
//! time), and a scrape waits at most [`GATHER_LIMIT`] for the reactors'
//! figures. So a hostile client never slows a reactor, and all of them
//! together hold at most [`OPEN_CLIENTS`] descriptors and requests.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long a client has to send its request.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(2);
/// The most of a request that is read (request line and headers).
pub const REQUEST_BYTES: usize = 8192;
/// How long a scrape waits for the application thread.
pub const GATHER_LIMIT: Duration = Duration::from_secs(5);
/// How many clients may be sending their requests at once.
pub const OPEN_CLIENTS: usize = 64;
/// How long a client has to take its whole answer: one that reads slowly
/// is cut off then, so it cannot hold the one HTTP thread from the others.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(2);
/// How long one gathering answers scrapes: a client that asks back to back
/// makes the application thread gather at most this often.
pub const GATHERED_FOR: Duration = Duration::from_millis(250);

/// How long the server waits after a failed accept or poll.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the server asks for each scrape: the exposition, or why not.
pub type Gather = dyn Fn(Duration) -> Result<String, String> + Send;

/// A client whose request has not ended yet.
struct Client {
    stream: TcpStream,
    head: Vec<u8>,
    deadline: Instant,
}

/// What reading a client's socket gave.
enum Progress {
    /// The request has not ended yet.
    More,
    /// The request line, and whether the client accepts OpenMetrics.
    Request(String, bool),
    /// Closed, or the request grew past [`REQUEST_BYTES`].
    Done,
}

/// Serves `listener` until the process ends.
pub fn serve(listener: TcpListener, gather: Box<Gather>) {
    if let Err(e) = listener.set_nonblocking(true) {
        crate::log::error(&format!("metrics endpoint: {e}: not serving"));
        return;
    }
    let mut clients: VecDeque<Client> = VecDeque::new();
    let mut last: Option<(Instant, String)> = None;
    let mut gather_now = move |limit: Duration| {
        if let Some((at, text)) = &last {
            if at.elapsed() < GATHERED_FOR {
                return Ok(text.clone());
            }
        }
        let text = gather(limit)?;
        last = Some((Instant::now(), text.clone()));
        Ok(text)
    };
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(clients.iter().map(|c| c.stream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Clients are in the order they came, so the first one's deadline
        // is the nearest.
        let wait = clients.front().map_or(-1, |c| {
            let left = c.deadline.saturating_duration_since(Instant::now());
            left.as_millis().min(60_000) as libc::c_int + 1
        });
        // SAFETY: `fds` is an array of `fds.len()` initialised pollfds that
        // lives across the call; poll only writes their `revents`.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                std::thread::sleep(ACCEPT_BACKOFF);
            }
            continue;
        }
        // Newest first, so removing one leaves the older indices valid.
        for i in (0..clients.len()).rev() {
            if fds[i + 1].revents == 0 {
                continue;
            }
            match read_some(&mut clients[i]) {
                Progress::More => {}
                Progress::Request(line, openmetrics) => {
                    if let Some(c) = clients.remove(i) {
                        // A failed write means the client left.
                        let _ = answer(c.stream, &line, openmetrics, &mut gather_now);
                    }
                }
                Progress::Done => {
                    if let Some(c) = clients.remove(i) {
                        too_slow_or_large(c.stream);
                    }
                }
            }
        }
        let now = Instant::now();
        while clients.front().is_some_and(|c| c.deadline <= now) {
            if let Some(c) = clients.pop_front() {
                too_slow_or_large(c.stream);
            }
        }
        if fds[0].revents != 0 {
            accept_all(&listener, &mut clients);
        }
    }
}

/// Takes every connection waiting in the kernel's queue.
fn accept_all(listener: &TcpListener, clients: &mut VecDeque<Client>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if clients.len() >= OPEN_CLIENTS {
                    if let Some(oldest) = clients.pop_front() {
                        too_slow_or_large(oldest.stream);
                    }
                }
                clients.push_back(Client {
                    stream,
                    head: Vec::with_capacity(1024),
                    deadline: Instant::now() + REQUEST_LIMIT,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => {
                // Out of descriptors, say: accepting again at once would spin.
                std::thread::sleep(ACCEPT_BACKOFF);
                return;
            }
        }
    }
}

/// Reads what `client` has sent so far.
fn read_some(client: &mut Client) -> Progress {
    let mut chunk = [0u8; 1024];
    loop {
        match client.stream.read(&mut chunk) {
            Ok(0) => return Progress::Done,
            Ok(n) => {
                let room = REQUEST_BYTES - client.head.len();
                client.head.extend_from_slice(&chunk[..n.min(room)]);
                if let Some(request) = request_in(&client.head) {
                    return Progress::Request(request.0, request.1);
                }
                if client.head.len() >= REQUEST_BYTES {
                    return Progress::Done;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Progress::More,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Progress::Done,
        }
    }
}

/// The request line, and whether the client accepts OpenMetrics, once
/// `head` holds the end of the headers.
fn request_in(head: &[u8]) -> Option<(String, bool)> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&head[..end]);
    let openmetrics = head.lines().skip(1).any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("accept:") && l.contains("application/openmetrics-text")
    });
    let line = head.lines().next().unwrap_or_default().to_string();
    Some((line, openmetrics))
}

/// Tells a client whose request did not arrive in time, or in
/// [`REQUEST_BYTES`], and closes it; what does not fit in its socket's
/// buffer at once is not sent.
fn too_slow_or_large(mut stream: TcpStream) {
    let _ = stream.write_all(
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 31\r\nConnection: close\r\n\r\nrequest too slow or too large\r\n",
    );
}

fn answer(
    mut stream: TcpStream,
    request: &str,
    openmetrics: bool,
    gather: &mut dyn FnMut(Duration) -> Result<String, String>,
) -> std::io::Result<()> {
    // The answer may be larger than the socket's buffer: written blocking,
    // for at most ANSWER_LIMIT in all (respond bounds it).
    stream.set_nonblocking(false)?;
    let mut words = request.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => match gather(GATHER_LIMIT) {
            Ok(text) if openmetrics => respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &text,
            ),
            Ok(text) => respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &classic(&text),
            ),
            Err(why) => respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                &format!("{why}\n"),
            ),
        },
        (Some("GET"), Some(_)) => {
            respond(&mut stream, "404 Not Found", "text/plain", "try /metrics\n")
        }
        _ => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics only\n",
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let deadline = Instant::now() + ANSWER_LIMIT;
    write_by(stream, head.as_bytes(), deadline)?;
    write_by(stream, body.as_bytes(), deadline)
}

/// Writes all of `bytes` by `deadline`, or fails with `TimedOut`: a write
/// timeout bounds each `write` call only, and a client that takes a few
/// bytes now and then would make each call last a little.
fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// OpenMetrics text as Prometheus's classic text format (for clients that
/// do not ask for OpenMetrics, `promtool check metrics` among them): a
/// counter's HELP and TYPE name its `_total` samples, and the UNIT and EOF
/// lines go.
pub fn classic(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that takes 64 KiB every 50 ms lets each write go on within
    /// any per-write timeout, so writing 256 MiB to it with `write_all`
    /// would take over three minutes; the answer's deadline ends it.
    #[test]
    fn a_slow_reader_is_cut_off_at_the_answers_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut got, mut buf) = (0usize, vec![0u8; 64 << 10]);
            while let Ok(n) = client.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
                std::thread::sleep(Duration::from_millis(50));
            }
            got
        });
        let answer = vec![b'x'; 256 << 20];
        let deadline = Instant::now() + Duration::from_millis(500);
        let written = write_by(&mut server, &answer, deadline);
        drop(server);
        let got = reader.join().unwrap();
        assert_eq!(
            written.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::TimedOut)
        );
        assert!(got > 0 && got < answer.len(), "the reader took {got} bytes");
    }

    #[test]
    fn counters_are_named_by_their_samples_in_the_classic_format() {
        let om = "# HELP x_seconds Time.\n# TYPE x_seconds counter\n# UNIT x_seconds seconds\n\
                  x_seconds_total{a=\"1\"} 2.5\n# HELP g Gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP x_seconds_total Time.\n# TYPE x_seconds_total counter\n\
             x_seconds_total{a=\"1\"} 2.5\n# HELP g Gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
