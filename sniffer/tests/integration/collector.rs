//! A real HTTP/1.1 collector on a TCP socket (keep-alive, Content-Length bodies, gzip), whose
//! answers a test scripts. It runs inside the sniffer's network namespace.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

/// One POST the collector received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request target (path and query).
    pub target: String,
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
    /// The body, gunzipped when `Content-Encoding: gzip`.
    pub raw: Vec<u8>,
    /// The body parsed as JSON (`Null` when it is not JSON: protobuf, NDJSON).
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// What to answer.
pub enum Reply {
    /// A status line and extra headers, empty body.
    Status(u16, Vec<(&'static str, String)>),
    /// A status line, a content type and a body.
    Body(u16, &'static str, Vec<u8>),
    /// Nothing: the request stays unanswered until the collector stops.
    Hang,
}

type Script = dyn FnMut(usize, &Received) -> Reply + Send;

/// The collector; stops on drop.
pub struct Collector {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Collector {
    /// Serves on `listener` (already bound, e.g. inside a namespace); `script` gets the index of
    /// each request (from 0) and the request, and says what to answer.
    pub fn start(
        listener: TcpListener,
        script: impl FnMut(usize, &Received) -> Reply + Send + 'static,
    ) -> Self {
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Mutex<Box<Script>>> = Arc::new(Mutex::new(Box::new(script)));
        let (seen, stopping) = (Arc::clone(&received), Arc::clone(&stop));
        let acceptor = thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (seen, script, stopping) = (
                            Arc::clone(&seen),
                            Arc::clone(&script),
                            Arc::clone(&stopping),
                        );
                        thread::spawn(move || serve_connection(stream, &seen, &script, &stopping));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            received,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the requests so far, or panics after `timeout`.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&[Received]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.received.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "collector: condition not met within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve_connection(
    stream: TcpStream,
    seen: &Mutex<Vec<Received>>,
    script: &Mutex<Box<Script>>,
    stopping: &AtomicBool,
) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let Some(received) = read_request(&mut reader, stopping) else {
            return;
        };
        let reply = {
            let mut all = seen.lock().unwrap();
            let index = all.len();
            all.push(received.clone());
            (script.lock().unwrap())(index, &received)
        };
        let (status, mut headers, body) = match reply {
            Reply::Status(status, headers) => (status, headers, Vec::new()),
            Reply::Body(status, content_type, body) => (
                status,
                vec![("Content-Type", content_type.to_owned())],
                body,
            ),
            Reply::Hang => {
                while !stopping.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        };
        headers.push(("Content-Length", body.len().to_string()));
        let mut response = format!("HTTP/1.1 {status} Scripted\r\n");
        for (name, value) in headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        let mut bytes = response.into_bytes();
        bytes.extend_from_slice(&body);
        if writer.write_all(&bytes).is_err() {
            return;
        }
    }
}

/// Reads one request; `None` at end of stream or when the collector stops.
fn read_request(reader: &mut BufReader<TcpStream>, stopping: &AtomicBool) -> Option<Received> {
    let mut headers = HashMap::new();
    let mut target = String::new();
    let mut first = true;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(_) if !stopping.load(Ordering::Relaxed) => continue,
            Err(_) => return None,
        }
        let line = line.trim_end();
        if first {
            let mut parts = line.split(' ');
            assert_eq!(
                parts.next(),
                Some("POST"),
                "unexpected request line {line:?}"
            );
            target = parts.next().unwrap_or_default().to_owned();
            first = false;
            continue;
        }
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header");
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers
        .get("content-length")
        .expect("the sniffer sends Content-Length")
        .parse()
        .unwrap();
    let mut raw = vec![0; length];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut filled = 0;
    while filled < length {
        match reader.read(&mut raw[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(_) => assert!(Instant::now() < deadline, "body did not arrive"),
        }
    }
    let raw = if headers.get("content-encoding").map(String::as_str) == Some("gzip") {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut plain)
            .expect("gzip body");
        plain
    } else {
        raw
    };
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Some(Received {
        target,
        headers,
        raw,
        body,
        at: Instant::now(),
    })
}

/// Answers 200 to everything.
pub fn accept_all(_: usize, _: &Received) -> Reply {
    Reply::Status(200, Vec::new())
}
