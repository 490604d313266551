//! The HTTP side: one thread that answers `GET /metrics`, one connection
//! at a time, off the reactors. What a client may cost is bounded: a
//! request has [`REQUEST_LIMIT`] to arrive in at most [`REQUEST_BYTES`]
//! (slow or endless headers are cut off), further connections wait in the
//! kernel's accept queue, and a scrape waits at most [`GATHER_LIMIT`] for
//! the reactors' figures. So a hostile client slows scrapes at worst, never
//! a reactor, and holds no more memory than one request.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long a client has to send its request.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(2);
/// The most of a request that is read (request line and headers).
pub const REQUEST_BYTES: usize = 8192;
/// How long a scrape waits for the application thread.
pub const GATHER_LIMIT: Duration = Duration::from_secs(5);

/// How long the server waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the server asks for each scrape: the exposition, or why not.
pub type Gather = dyn Fn(Duration) -> Result<String, String> + Send;

/// Serves `listener` until the process ends.
pub fn serve(listener: TcpListener, gather: Box<Gather>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Out of descriptors, say: accepting again at once would spin.
            std::thread::sleep(ACCEPT_BACKOFF);
            continue;
        };
        // A failed write means the client left: nothing to do.
        let _ = answer(stream, &*gather);
    }
}

fn answer(mut stream: TcpStream, gather: &Gather) -> std::io::Result<()> {
    let (request, openmetrics) = match read_request(&mut stream)? {
        Some(r) => r,
        None => {
            return respond(
                &mut stream,
                "408 Request Timeout",
                "text/plain",
                "request too slow or too large\n",
            )
        }
    };
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

/// The request line, and whether the client accepts OpenMetrics, once the
/// headers have ended; `None` if the client took longer than
/// [`REQUEST_LIMIT`] or sent more than [`REQUEST_BYTES`].
fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<(String, bool)>> {
    let deadline = Instant::now() + REQUEST_LIMIT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || buf.len() >= REQUEST_BYTES {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n.min(REQUEST_BYTES - buf.len())]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            let openmetrics = head.lines().skip(1).any(|l| {
                let l = l.to_ascii_lowercase();
                l.starts_with("accept:") && l.contains("application/openmetrics-text")
            });
            let line = head.lines().next().unwrap_or_default().to_string();
            return Ok(Some((line, openmetrics)));
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_LIMIT))?;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
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
