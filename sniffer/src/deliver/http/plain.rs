//! The client for `http://` collectors: HTTP/1.1 over one kept-alive TCP connection per sender,
//! written for the one request the senders make. It sends the head and the body with one
//! `writev` from the encoder's buffer, where ureq copied each body into its own buffer first and
//! handled headers generically: 59 ns a packet less of the sidecar's CPU in the flood
//! benchmark, at the median of 7 rounds beside the ureq build (docs/benchmarks.md). `https://`
//! collectors, and any collector when a proxy variable is set, stay on ureq ([`super::client`]).
//!
//! What ureq gave is kept: the connect timeout, one deadline over the whole request (resolve,
//! connect, send, answer), no redirects (a `3xx` is a status like any other), the cached
//! resolver, answers of any framing read up to the answer limit ([`super::wire`]).

use std::{
    io::{self, IoSlice, Read, Write as _},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use thiserror::Error;
use ureq::{
    Timeout,
    config::Config,
    http::Uri,
    unversioned::{resolver::Resolver as _, transport::NextTimeout},
};

use super::wire::{Answer, AnswerError, read_answer};
use crate::deliver::resolve::CachingResolver;

/// Why a request got no answer; it is retried.
#[derive(Debug, Error)]
pub enum PlainError {
    /// The collector's name did not resolve.
    #[error("cannot resolve the collector's host: {0}")]
    Resolve(#[source] ureq::Error),
    /// No address took the connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The request's deadline passed before it was sent.
    #[error("the request timeout ran out before the request was sent")]
    Timeout,
    /// Sending the request failed.
    #[error("cannot send the request: {0}")]
    Write(#[source] io::Error),
    /// No answer could be read.
    #[error(transparent)]
    Answer(#[from] AnswerError),
}

/// A connection kept between requests, with its read buffer.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    head: Vec<u8>,
}

impl Connection {
    /// Whether the collector has neither closed the connection nor sent anything unasked since
    /// the last answer: checked before each reuse, so an idle connection the collector timed out
    /// costs a reconnect, not a failed request.
    fn still_open(&self) -> bool {
        let mut byte = 0_u8;
        // SAFETY: `byte` is valid for one byte of writes for the whole call, and the descriptor
        // is the stream's own, open while `self` lives.
        let read = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        read < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

/// The `http://` client the senders share; each sender keeps its own [`Connection`].
#[derive(Debug)]
pub struct Plain {
    /// The URL, for the resolver.
    uri: Uri,
    /// The ureq settings the resolver reads (the IP family).
    config: Config,
    resolver: CachingResolver,
    connect_timeout: Duration,
    /// Every request's head up to its `Content-Length`.
    head: Vec<u8>,
    /// Whether answers' bodies are read (OTLP's partial success is in them).
    body_wanted: bool,
}

impl Plain {
    /// A client for `uri`, whose requests carry `headers` after the request line, `Host` and
    /// `User-Agent`, and whose answers' bodies are read when `body_wanted` (else only as far as
    /// keeping the connection needs).
    ///
    /// # Errors
    ///
    /// When `url` is not an absolute URL with a host (`OUTPUT_URL` was checked long before).
    pub fn new(
        url: &str,
        headers: &[(String, String)],
        config: Config,
        connect_timeout: Duration,
        body_wanted: bool,
    ) -> Result<Self, ureq::http::uri::InvalidUri> {
        let uri: Uri = url.parse()?;
        let authority = uri.authority().map_or("", |authority| authority.as_str());
        let mut target = match uri.path() {
            "" => "/".to_owned(),
            path => path.to_owned(),
        };
        if let Some(query) = uri.query() {
            target.push('?');
            target.push_str(query);
        }
        let mut head = format!(
            "POST {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: tcp-sniffer/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("Content-Length: ");
        Ok(Self {
            uri,
            config,
            resolver: CachingResolver::default(),
            connect_timeout,
            head: head.into_bytes(),
            body_wanted,
        })
    }

    /// POSTs `body` on the kept connection in `kept` (or a new one), all within `timeout`, and
    /// leaves the connection there when the answer allows another request on it.
    ///
    /// # Errors
    ///
    /// When the collector cannot be reached or gives no answer in time.
    pub fn post(
        &self,
        kept: &mut Option<Connection>,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Answer, PlainError> {
        let deadline = Deadline::after(timeout);
        let mut connection = match kept.take() {
            Some(connection) if connection.still_open() => connection,
            _ => self.connect(deadline)?,
        };
        let Connection { stream, buf, head } = &mut connection;
        head.clear();
        head.extend_from_slice(&self.head);
        head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        if let Err(failed) = send(stream, &[head, body], deadline) {
            // A collector may answer before it has read the whole body (`413`, a `503` while
            // shedding load) and close: its answer is still in the socket and says what to do,
            // where the failed write would only say "retry".
            return match read_answer(&mut Timed { stream, deadline }, buf, self.body_wanted) {
                Ok((answer, _)) => Ok(answer),
                Err(_) => Err(failed),
            };
        }
        let (answer, reusable) =
            read_answer(&mut Timed { stream, deadline }, buf, self.body_wanted)?;
        if reusable {
            *kept = Some(connection);
        }
        Ok(answer)
    }

    /// Resolves the host (cached) and connects to the first address that answers.
    fn connect(&self, deadline: Deadline) -> Result<Connection, PlainError> {
        let timeout = NextTimeout {
            after: deadline.left().ok_or(PlainError::Timeout)?.into(),
            reason: Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        let addrs = self
            .resolver
            .resolve(&self.uri, &self.config, timeout)
            .map_err(PlainError::Resolve)?;
        let mut failure = None;
        for addr in addrs.iter() {
            let Some(left) = deadline.left() else { break };
            match TcpStream::connect_timeout(addr, left.min(self.connect_timeout)) {
                Ok(stream) => {
                    // The head and body go in one write; the next request waits for this answer.
                    stream
                        .set_nodelay(true)
                        .map_err(|source| PlainError::Connect {
                            addr: *addr,
                            source,
                        })?;
                    return Ok(Connection {
                        stream,
                        buf: Vec::new(),
                        head: Vec::new(),
                    });
                }
                Err(source) => {
                    failure = Some(PlainError::Connect {
                        addr: *addr,
                        source,
                    });
                }
            }
        }
        Err(failure.unwrap_or(PlainError::Timeout))
    }
}

/// When a request must be over.
#[derive(Clone, Copy, Debug)]
struct Deadline(Option<Instant>);

impl Deadline {
    fn after(timeout: Duration) -> Self {
        Self(Instant::now().checked_add(timeout))
    }

    /// Time left, `None` once it has passed; the socket timeouts take no zero.
    fn left(self) -> Option<Duration> {
        let Some(at) = self.0 else {
            return Some(Duration::MAX);
        };
        Some(at.checked_duration_since(Instant::now())?).filter(|left| !left.is_zero())
    }

    fn ran_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "the request timeout ran out")
    }
}

/// Writes all of `parts` in as few `writev` calls as the socket takes, each bounded by what is
/// left of the deadline.
fn send(stream: &mut TcpStream, parts: &[&[u8]; 2], deadline: Deadline) -> Result<(), PlainError> {
    let mut slices = [IoSlice::new(parts[0]), IoSlice::new(parts[1])];
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let left = deadline
            .left()
            .ok_or(PlainError::Write(Deadline::ran_out()))?;
        stream
            .set_write_timeout(Some(left))
            .map_err(PlainError::Write)?;
        match stream.write_vectored(slices) {
            Ok(0) => return Err(PlainError::Write(io::ErrorKind::WriteZero.into())),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                return Err(PlainError::Write(Deadline::ran_out()));
            }
            Err(err) => return Err(PlainError::Write(err)),
        }
    }
    Ok(())
}

/// The stream, each read bounded by what is left of the deadline.
struct Timed<'a> {
    stream: &'a mut TcpStream,
    deadline: Deadline,
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.left().ok_or_else(Deadline::ran_out)?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf).map_err(|err| {
            if err.kind() == io::ErrorKind::WouldBlock {
                Deadline::ran_out()
            } else {
                err
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread};

    use super::*;

    fn client(url: &str) -> Plain {
        let config = ureq::Agent::config_builder().build();
        let headers = [
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Authorization".to_owned(), "Bearer t".to_owned()),
        ];
        Plain::new(url, &headers, config, Duration::from_secs(1), true).unwrap()
    }

    /// The heads (as text) and bodies of the requests a test collector received.
    type Requests = Vec<(String, Vec<u8>)>;

    /// Reads a request's head from `stream`, as text.
    fn head(stream: &mut TcpStream) -> Option<String> {
        let mut bytes = Vec::new();
        let mut byte = [0];
        while !bytes.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).ok()? == 0 {
                return None;
            }
            bytes.push(byte[0]);
        }
        Some(String::from_utf8(bytes).unwrap())
    }

    /// Reads one request from `stream`: its head as text and its body.
    fn request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
        let head = head(stream)?;
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        stream.read_exact(&mut body).ok()?;
        Some((head, body))
    }

    /// A collector on loopback that answers `answers` requests per connection, each with `reply`,
    /// over `connections` connections, then closes; returns the requests' heads and bodies.
    fn collector(
        connections: usize,
        answers: usize,
        reply: &'static [u8],
    ) -> (SocketAddr, thread::JoinHandle<Requests>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..connections {
                let (mut stream, _) = listener.accept().unwrap();
                for _ in 0..answers {
                    seen.extend(request(&mut stream));
                    stream.write_all(reply).unwrap();
                }
            }
            seen
        });
        (addr, server)
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[test]
    fn requests_carry_one_head_and_the_body_and_share_a_connection() {
        // One connection for both requests: a second one would never be accepted, and time out.
        let (addr, server) = collector(1, 2, OK);
        let plain = client(&format!("http://{addr}/v1/batches?x=1"));
        let mut kept = None;
        for body in [&b"hello"[..], b""] {
            let answer = plain.post(&mut kept, body, Duration::from_secs(5)).unwrap();
            assert_eq!((answer.status, &answer.body[..]), (200, &b"ok"[..]));
            assert!(kept.is_some());
        }
        let seen = server.join().unwrap();
        let expected = |length: usize| {
            format!(
                "POST /v1/batches?x=1 HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tcp-sniffer/{}\r\n\
                 Content-Type: application/json\r\nAuthorization: Bearer t\r\n\
                 Content-Length: {length}\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
        };
        assert_eq!(
            seen,
            [(expected(5), b"hello".to_vec()), (expected(0), Vec::new())]
        );
    }

    #[test]
    fn a_url_without_a_path_posts_to_the_root() {
        for (suffix, target) in [("", "/"), ("/", "/"), ("?q", "/?q")] {
            let (addr, server) = collector(1, 1, OK);
            let plain = client(&format!("http://{addr}{suffix}"));
            plain.post(&mut None, b"x", Duration::from_secs(5)).unwrap();
            let seen = server.join().unwrap();
            assert!(
                seen[0]
                    .0
                    .starts_with(&format!("POST {target} HTTP/1.1\r\n")),
                "{suffix:?}: {:?}",
                seen[0].0
            );
        }
    }

    #[test]
    fn a_connection_the_collector_closed_while_idle_is_replaced_before_use() {
        let (addr, server) = collector(2, 1, OK);
        let plain = client(&format!("http://{addr}/"));
        let mut kept = None;
        plain.post(&mut kept, b"1", Duration::from_secs(5)).unwrap();
        // The collector closes its end after the first answer; let the FIN arrive.
        let connection = kept.as_ref().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while connection.still_open() {
            assert!(Instant::now() < deadline, "the close never arrived");
            thread::sleep(Duration::from_millis(5));
        }
        plain.post(&mut kept, b"2", Duration::from_secs(5)).unwrap();
        assert_eq!(server.join().unwrap().len(), 2);
    }

    #[test]
    fn an_answer_that_closes_the_connection_is_not_kept() {
        let (addr, server) = collector(
            1,
            1,
            b"HTTP/1.1 503 Busy\r\nConnection: close\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n",
        );
        let plain = client(&format!("http://{addr}/"));
        let mut kept = None;
        let answer = plain.post(&mut kept, b"1", Duration::from_secs(5)).unwrap();
        assert_eq!(
            (answer.status, answer.retry_after.as_deref()),
            (503, Some("3"))
        );
        assert!(kept.is_none());
        server.join().unwrap();
    }

    /// A collector that refuses a body it will not read, and closes (with unread bytes, so
    /// with a reset): the refusal is the outcome, not the failed write.
    #[test]
    fn an_answer_sent_before_the_body_was_read_is_the_outcome() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            head(&mut stream).unwrap();
            stream
                .write_all(
                    b"HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                )
                .unwrap();
        });
        let body = vec![b'x'; 16 << 20];
        let mut kept = None;
        let answer = client(&format!("http://{addr}/"))
            .post(&mut kept, &body, Duration::from_secs(5))
            .unwrap();
        assert_eq!(answer.status, 413);
        assert!(kept.is_none());
        server.join().unwrap();
    }

    /// An answer without a length from a collector that keeps the connection open: waited for
    /// only when its body matters.
    #[test]
    fn an_open_ended_answer_does_not_hold_the_batch_unless_its_body_matters() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut held = Vec::new();
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                head(&mut stream).unwrap();
                stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n{}").unwrap();
                held.push(stream);
            }
            thread::sleep(Duration::from_secs(1));
        });
        let config = ureq::Agent::config_builder().build();
        let url = format!("http://{addr}/");
        let quick = Plain::new(&url, &[], config.clone(), Duration::from_secs(1), false).unwrap();
        let start = Instant::now();
        let answer = quick
            .post(&mut None, b"1", Duration::from_millis(500))
            .unwrap();
        assert_eq!(answer.status, 200);
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        let reading = Plain::new(&url, &[], config, Duration::from_secs(1), true).unwrap();
        let start = Instant::now();
        let answer = reading
            .post(&mut None, b"1", Duration::from_millis(500))
            .unwrap();
        assert_eq!(
            (answer.status, &answer.body[..], answer.truncated),
            (200, &b"{}"[..], true)
        );
        assert!(start.elapsed() >= Duration::from_millis(500));
        server.join().unwrap();
    }

    #[test]
    fn a_silent_collector_is_given_up_on_at_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let plain = client(&format!("http://{addr}/"));
        let start = Instant::now();
        let err = plain
            .post(&mut None, b"1", Duration::from_millis(200))
            .unwrap_err();
        let took = start.elapsed();
        assert!(err.to_string().contains("timeout ran out"), "{err}");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(listener);
    }

    #[test]
    fn a_refused_connection_names_the_address() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = client(&format!("http://{addr}/"))
            .post(&mut None, b"1", Duration::from_secs(1))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot connect to {addr}")),
            "{err}"
        );
    }
}
