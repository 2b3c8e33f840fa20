//! Reading a collector's HTTP/1.1 answer from any byte stream: the head (status, `Retry-After`,
//! how the body is framed), then the body's first [`MAX_ANSWER_BYTES`]. Pure over [`Read`], so
//! every framing and every hostile answer is tested here on bytes; [`super::plain`] gives it
//! the socket, with the request's deadline on every read.
//!
//! Bounded whatever the collector sends: a head over [`MAX_HEAD_BYTES`] is refused, a body is
//! read up to the answer limit and no further (the connection is then closed rather than
//! drained), chunk lines and trailers are capped. The connection is kept for the next request
//! only when the answer was HTTP/1.1, did not ask to close, and was read to its exact end.

use std::io::{self, Read};

use thiserror::Error;

use crate::deliver::answer::MAX_ANSWER_BYTES;

/// Longest accepted answer head, interim (`1xx`) heads included: ureq's limit too.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header lines in one head.
const MAX_HEADERS: usize = 128;

/// Longest chunk-size line (with extensions) or trailer line.
const MAX_CHUNK_LINE: usize = 4096;

/// How much is asked of the stream at once.
const READ_SIZE: usize = 8 * 1024;

/// What the collector answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The first `Retry-After` header, when it is text.
    pub retry_after: Option<String>,
    /// The body's first [`MAX_ANSWER_BYTES`].
    pub body: Vec<u8>,
    /// More followed them, or the body broke off (a cut, a bad chunk, a read error).
    pub truncated: bool,
}

/// Why no answer could be read: the request counts as failed and is retried.
#[derive(Debug, Error)]
pub enum AnswerError {
    /// The stream ended before the first byte of an answer.
    #[error("the collector closed the connection without answering")]
    Closed,
    /// The stream ended inside the head.
    #[error("the collector's answer ended inside its head")]
    CutHead,
    /// Reading failed (a timeout, a reset).
    #[error("cannot read the collector's answer: {0}")]
    Read(#[source] io::Error),
    /// Not an HTTP/1.x status line and headers.
    #[error("the collector's answer is not HTTP/1.x ({0})")]
    NotHttp(#[source] httparse::Error),
    /// More than [`MAX_HEADERS`] header lines.
    #[error("the collector's answer has more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    /// The head is longer than [`MAX_HEAD_BYTES`].
    #[error("the collector's answer head is longer than {MAX_HEAD_BYTES} bytes")]
    HeadTooLong,
    /// `101 Switching Protocols`, which nothing asked for.
    #[error("the collector switched protocols (HTTP 101) unasked")]
    Switched,
    /// A `Content-Length` that is not one number.
    #[error("the collector's answer has an invalid Content-Length")]
    Length,
}

/// How the body ends (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body: `1xx`, `204`, `304`.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Until the collector closes the connection.
    UntilClose,
}

/// The parts of a head that matter here.
struct Head {
    status: u16,
    retry_after: Option<String>,
    framing: Framing,
    /// HTTP/1.1 without `Connection: close`.
    keep_alive: bool,
}

/// Bytes of the stream, read ahead into a buffer the caller keeps between answers.
struct Source<'a, R> {
    reader: &'a mut R,
    buf: &'a mut Vec<u8>,
    /// Where the unconsumed bytes start.
    pos: usize,
    /// The stream has ended.
    eof: bool,
}

impl<R: Read> Source<'_, R> {
    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let start = self.buf.len();
        self.buf.resize(start + READ_SIZE, 0);
        let read = loop {
            match self.reader.read(&mut self.buf[start..]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        self.buf.truncate(start + *read.as_ref().unwrap_or(&0));
        let more = read? > 0;
        self.eof = !more;
        Ok(more)
    }

    /// The next head, interim ones skipped; the bytes after it stay pending.
    fn head(&mut self) -> Result<Head, AnswerError> {
        // Interim heads count toward the limit, so endless `100 Continue`s end.
        let mut budget = MAX_HEAD_BYTES;
        loop {
            let (head, used) = self.one_head(budget)?;
            self.pos += used;
            budget -= used;
            match head.status {
                101 => return Err(AnswerError::Switched),
                100..=199 => {}
                _ => return Ok(head),
            }
        }
    }

    /// Parses the head at the start of the pending bytes, reading until it is whole.
    fn one_head(&mut self, budget: usize) -> Result<(Head, usize), AnswerError> {
        let mut scanned: usize = 0;
        loop {
            let pending = self.pending();
            // Parse only once the blank line that ends a head has arrived: a collector that
            // sends its head a byte at a time must not cost a parse per byte.
            let end = pending[scanned.saturating_sub(3)..]
                .windows(2)
                .position(|pair| pair == b"\n\n")
                .or_else(|| {
                    pending[scanned.saturating_sub(3)..]
                        .windows(3)
                        .position(|triple| triple == b"\n\r\n")
                });
            if end.is_some() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(pending) {
                    Ok(httparse::Status::Complete(used)) if used <= budget => {
                        return Ok((interpret(&response)?, used));
                    }
                    Ok(httparse::Status::Complete(_)) => return Err(AnswerError::HeadTooLong),
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(AnswerError::TooManyHeaders);
                    }
                    Err(err) => return Err(AnswerError::NotHttp(err)),
                }
            }
            if pending.len() > budget {
                return Err(AnswerError::HeadTooLong);
            }
            scanned = pending.len();
            let was_empty = pending.is_empty();
            if !self.fill().map_err(AnswerError::Read)? {
                return Err(if was_empty && budget == MAX_HEAD_BYTES {
                    AnswerError::Closed
                } else {
                    AnswerError::CutHead
                });
            }
        }
    }

    /// Appends up to `want` body bytes to `out`; false when the stream ended first.
    fn take(&mut self, want: u64, out: &mut Vec<u8>) -> io::Result<bool> {
        let mut left = want;
        while left > 0 {
            if self.pending().is_empty() && !self.fill()? {
                return Ok(false);
            }
            let pending = self.pending();
            let n = pending
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            out.extend_from_slice(&pending[..n]);
            self.pos += n;
            left -= n as u64;
        }
        Ok(true)
    }

    /// The next line without its line ending; `None` when it is longer than `MAX_CHUNK_LINE` or
    /// the stream ends first.
    fn line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(at) = self.pending().iter().position(|&b| b == b'\n') {
                let mut line = self.pending()[..at].to_vec();
                self.pos += at + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok((line.len() <= MAX_CHUNK_LINE).then_some(line));
            }
            if self.pending().len() > MAX_CHUNK_LINE || !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// A chunked body into `out`, up to `limit` bytes kept; true when it ended properly.
    fn chunked(&mut self, out: &mut Vec<u8>, limit: usize) -> io::Result<Complete> {
        loop {
            let Some(line) = self.line()? else {
                return Ok(Complete::Broken);
            };
            let digits = line.split(|&b| b == b';').next().unwrap_or_default();
            let Some(size) = chunk_size(digits) else {
                return Ok(Complete::Broken);
            };
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    match self.line()? {
                        Some(line) if line.is_empty() => return Ok(Complete::Whole),
                        Some(_) => {}
                        None => return Ok(Complete::Broken),
                    }
                }
            }
            let room = (limit + 1).saturating_sub(out.len()) as u64;
            if size > room {
                self.take(room, out)?;
                return Ok(Complete::Cut);
            }
            if !self.take(size, out)? {
                return Ok(Complete::Broken);
            }
            match self.line()? {
                Some(line) if line.is_empty() => {}
                _ => return Ok(Complete::Broken),
            }
        }
    }
}

/// How a body read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Complete {
    /// At its exact end.
    Whole,
    /// At the limit, with more to come.
    Cut,
    /// Broken off: the stream ended, or the framing is wrong.
    Broken,
}

/// A chunk size: hexadecimal digits, at most 16 of them.
fn chunk_size(digits: &[u8]) -> Option<u64> {
    let digits = std::str::from_utf8(digits).ok()?.trim_matches([' ', '\t']);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// The status, `Retry-After`, framing and keep-alive of a parsed head.
fn interpret(response: &httparse::Response<'_, '_>) -> Result<Head, AnswerError> {
    let status = response.code.unwrap_or_default();
    let mut retry_after = None;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = response.version != Some(1);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).ok();
        if header.name.eq_ignore_ascii_case("retry-after") {
            if retry_after.is_none() {
                retry_after = value.map(|value| value.trim().to_owned());
            }
        } else if header.name.eq_ignore_ascii_case("content-length") {
            for item in value.ok_or(AnswerError::Length)?.split(',') {
                let item = item.trim();
                if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(AnswerError::Length);
                }
                let item: u64 = item.parse().map_err(|_| AnswerError::Length)?;
                if length.is_some_and(|length| length != item) {
                    return Err(AnswerError::Length);
                }
                length = Some(item);
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding says whether the body is chunked.
            let last = value.and_then(|value| value.rsplit(',').next());
            chunked = Some(last.is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")));
        } else if header.name.eq_ignore_ascii_case("connection") {
            close |= value.is_some_and(|value| {
                value
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("close"))
            });
        }
    }
    let framing = match (status, chunked, length) {
        (100..=199 | 204 | 304, _, _) => Framing::Empty,
        (_, Some(true), _) => Framing::Chunked,
        (_, Some(false), _) | (_, None, None) => Framing::UntilClose,
        (_, None, Some(length)) => Framing::Length(length),
    };
    Ok(Head {
        status,
        retry_after,
        // A body that ends when the connection does, or one framed twice, leaves nothing to reuse.
        keep_alive: !close
            && framing != Framing::UntilClose
            && !(chunked.is_some() && length.is_some()),
        framing,
    })
}

/// Reads one answer from `reader`, using `buf` for what is read ahead (cleared first); returns
/// it and whether the connection can carry another request. Without `body_wanted` (formats with
/// no partial success), a body that only ends with the connection is not waited for: the answer
/// comes back cut, and the connection is not kept.
///
/// # Errors
///
/// When no whole head arrives: the stream ends or fails first, or it is not HTTP/1.x.
pub fn read_answer(
    reader: &mut impl Read,
    buf: &mut Vec<u8>,
    body_wanted: bool,
) -> Result<(Answer, bool), AnswerError> {
    buf.clear();
    let mut source = Source {
        reader,
        buf,
        pos: 0,
        eof: false,
    };
    let Head {
        status,
        retry_after,
        framing,
        keep_alive,
    } = source.head()?;
    let mut body = Vec::new();
    let limit = MAX_ANSWER_BYTES;
    let complete = match framing {
        Framing::Empty => Ok(Complete::Whole),
        Framing::Length(length) => {
            let want = length.min(limit as u64 + 1);
            source.take(want, &mut body).map(|whole| match whole {
                true if want == length => Complete::Whole,
                true => Complete::Cut,
                false => Complete::Broken,
            })
        }
        Framing::Chunked => source.chunked(&mut body, limit),
        // A collector that holds the connection open would keep the batch waiting until the
        // request timeout, for bytes nothing reads.
        Framing::UntilClose if !body_wanted => Ok(Complete::Cut),
        Framing::UntilClose => source
            .take(limit as u64 + 1, &mut body)
            .map(|more| if more { Complete::Cut } else { Complete::Whole }),
    };
    let complete = complete.unwrap_or(Complete::Broken);
    let truncated = complete != Complete::Whole || body.len() > limit;
    body.truncate(limit);
    // Bytes after the answer would be read as the next one's start: only a clean end is kept.
    let reusable = keep_alive && complete == Complete::Whole && source.pending().is_empty();
    Ok((
        Answer {
            status,
            retry_after,
            body,
            truncated,
        },
        reusable,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that gives at most `step` bytes a read, then ends or fails.
    struct Drip<'a> {
        bytes: &'a [u8],
        step: usize,
        fail_at_end: bool,
    }

    impl Read for Drip<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.bytes.is_empty() && self.fail_at_end {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
            }
            let n = self.bytes.len().min(self.step).min(out.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn read_with(
        bytes: &[u8],
        step: usize,
        fail_at_end: bool,
    ) -> Result<(Answer, bool), AnswerError> {
        let mut drip = Drip {
            bytes,
            step,
            fail_at_end,
        };
        read_answer(&mut drip, &mut Vec::new(), true)
    }

    /// Reads `bytes` whole and a byte at a time, checking both agree.
    fn read(bytes: &[u8]) -> Result<(Answer, bool), AnswerError> {
        let whole = read_with(bytes, usize::MAX, false);
        let dripped = read_with(bytes, 1, false);
        assert_eq!(
            format!("{whole:?}"),
            format!("{dripped:?}"),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        whole
    }

    fn answer(status: u16, body: &[u8], truncated: bool) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: body.to_vec(),
            truncated,
        }
    }

    #[test]
    fn content_length_answers_keep_the_connection() {
        let (got, reusable) = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!((got, reusable), (answer(200, b"hello", false), true));
        let (got, reusable) = read(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((got, reusable), (answer(204, b"", false), true));
    }

    #[test]
    fn bare_line_feeds_end_lines_too() {
        let (got, reusable) = read(b"HTTP/1.1 202 Accepted\nContent-Length: 2\n\nok").unwrap();
        assert_eq!((got, reusable), (answer(202, b"ok", false), true));
    }

    #[test]
    fn chunked_answers_are_decoded_with_extensions_and_trailers() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            3;name=x\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (got, reusable) = read(bytes).unwrap();
        assert_eq!((got, reusable), (answer(200, b"abcde", false), true));
    }

    #[test]
    fn interim_answers_are_skipped() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </>\r\n\r\n\
            HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nRetry-After: 9\r\nContent-Length: 0\r\n\r\n";
        let (got, reusable) = read(bytes).unwrap();
        let expected = Answer {
            retry_after: Some("7".into()),
            ..answer(429, b"", false)
        };
        assert_eq!((got, reusable), (expected, true));
    }

    #[test]
    fn answers_that_end_with_the_connection_are_read_to_it_and_not_reused() {
        let (got, reusable) = read(b"HTTP/1.1 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!((got, reusable), (answer(200, b"all of it", false), false));
        let (got, reusable) = read(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((got, reusable), (answer(200, b"ok", false), false));
        let (got, reusable) = read(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok",
        )
        .unwrap();
        assert_eq!((got, reusable), (answer(200, b"ok", false), false));
        let (got, reusable) =
            read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nabc")
                .unwrap();
        assert_eq!((got, reusable), (answer(200, b"abc", false), false));
    }

    #[test]
    fn a_body_that_ends_with_the_connection_is_not_waited_for_unless_wanted() {
        // The stream fails after its bytes, as a read would at the request timeout.
        let bytes = b"HTTP/1.1 200 OK\r\n\r\npartial";
        let mut drip = Drip {
            bytes,
            step: usize::MAX,
            fail_at_end: true,
        };
        let (got, reusable) = read_answer(&mut drip, &mut Vec::new(), false).unwrap();
        assert_eq!((got, reusable), (answer(200, b"", true), false));
        let (got, reusable) = read_with(bytes, usize::MAX, true).unwrap();
        assert_eq!((got, reusable), (answer(200, b"partial", true), false));
        // Bodies with a length are read either way: the connection is kept for them.
        let mut drip = Drip {
            bytes: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            step: 1,
            fail_at_end: true,
        };
        let (got, reusable) = read_answer(&mut drip, &mut Vec::new(), false).unwrap();
        assert_eq!((got, reusable), (answer(200, b"ok", false), true));
    }

    #[test]
    fn long_bodies_are_cut_at_the_limit_and_the_connection_dropped() {
        let big = vec![b'x'; MAX_ANSWER_BYTES + 10];
        let mut bytes =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
        bytes.extend_from_slice(&big);
        let (got, reusable) = read_with(&bytes, usize::MAX, false).unwrap();
        assert_eq!(
            (got.body.len(), got.truncated, reusable),
            (MAX_ANSWER_BYTES, true, false)
        );

        // Exactly the limit is whole.
        let mut bytes =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {MAX_ANSWER_BYTES}\r\n\r\n").into_bytes();
        bytes.extend_from_slice(&big[..MAX_ANSWER_BYTES]);
        let (got, reusable) = read_with(&bytes, usize::MAX, false).unwrap();
        assert_eq!(
            (got.body.len(), got.truncated, reusable),
            (MAX_ANSWER_BYTES, false, true)
        );

        // A chunk that claims 2^64 - 1 bytes and an endless stream are cut the same way.
        let mut bytes =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n".to_vec();
        bytes.extend_from_slice(&big);
        let (got, reusable) = read_with(&bytes, usize::MAX, false).unwrap();
        assert_eq!(
            (got.body.len(), got.truncated, reusable),
            (MAX_ANSWER_BYTES, true, false)
        );
        let mut bytes = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        bytes.extend_from_slice(&big);
        let (got, _) = read_with(&bytes, 1000, false).unwrap();
        assert_eq!((got.body.len(), got.truncated), (MAX_ANSWER_BYTES, true));
    }

    #[test]
    fn bodies_that_break_off_keep_their_status_and_read_as_cut() {
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTrailer: cut",
        ] {
            let (got, reusable) = read(bytes).unwrap();
            assert_eq!(
                (got.status, got.truncated, reusable),
                (200, true, false),
                "{bytes:?}"
            );
        }
        let long_line = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1".as_slice(),
            &[b' '; 5000],
            b"\r\n",
        ]
        .concat();
        let (got, _) = read_with(&long_line, usize::MAX, false).unwrap();
        assert!(got.truncated);
        // A read that fails mid-body is a cut too.
        let (got, reusable) = read_with(
            b"HTTP/1.1 503 Busy\r\nContent-Length: 10\r\n\r\nshort",
            3,
            true,
        )
        .unwrap();
        assert_eq!((got.status, got.truncated, reusable), (503, true, false));
    }

    /// Bytes that arrive with the answer; ones that come later are caught by the check before
    /// reuse (`plain.rs`).
    #[test]
    fn bytes_after_the_answer_drop_the_connection() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
        let (got, reusable) = read_with(bytes, usize::MAX, false).unwrap();
        assert_eq!((got, reusable), (answer(200, b"ok", false), false));
    }

    #[test]
    fn what_is_not_an_answer_is_an_error_that_says_so() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "closed the connection without answering"),
            (b"HTTP/1.1 200 OK\r\nContent-Le", "ended inside its head"),
            (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not HTTP/1.x"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
                "switched protocols",
            ),
        ];
        for (bytes, expected) in cases {
            let err = read(bytes).unwrap_err().to_string();
            assert!(err.contains(expected), "{bytes:?}: {err}");
        }
        let (got, _) = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok").unwrap();
        assert_eq!(got, answer(200, b"ok", false));
        let err = read_with(b"HTTP/1.1 200", 4, true).unwrap_err().to_string();
        assert!(
            err.contains("cannot read the collector's answer: timed out"),
            "{err}"
        );
    }

    #[test]
    fn heads_are_bounded_however_they_arrive() {
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        while long.len() <= MAX_HEAD_BYTES {
            long.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        long.extend_from_slice(b"\r\n");
        // Too many lines, or too many bytes: either way refused, without reading on.
        assert!(read_with(&long, usize::MAX, false).is_err());
        let mut one_line = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        one_line.resize(MAX_HEAD_BYTES + 2, b'a');
        one_line.extend_from_slice(b"\r\n\r\n");
        let err = read_with(&one_line, 7, false).unwrap_err();
        assert!(matches!(err, AnswerError::HeadTooLong), "{err}");
        // Endless interim answers share the head budget.
        let endless = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_HEAD_BYTES / 20);
        let err = read_with(&endless, usize::MAX, false).unwrap_err();
        assert!(matches!(err, AnswerError::HeadTooLong), "{err}");
    }
}
