//! A minimal HTTP/1.1 client for Cloud Hypervisor's REST API on its Unix
//! socket.
//!
//! One request per connection (`Connection: close`), bounded sizes, read and
//! write timeouts. The response parser ([`read_response`]) is separate from
//! the socket so that it can be tested, and fuzzed, on arbitrary bytes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dc_vmm::VmmError;

const BACKEND: &str = "cloud-hypervisor";

/// Longest status line or header line accepted.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Most header lines accepted in one response.
pub const MAX_HEADERS: usize = 64;
/// Largest response body accepted (`vm.info` of a big VM is a few KiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default read and write timeout of one API call.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Longest error body quoted in a [`VmmError::Api`].
const MAX_QUOTED_ERROR_BYTES: usize = 2048;

/// An HTTP response: status code and body (headers are only used for framing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The REST API of one Cloud Hypervisor process (`/api/v1/...` on its socket).
#[derive(Clone, Debug)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    /// A client for the API socket at `socket` with the default timeout.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ApiClient {
            socket: socket.into(),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
        }
    }

    /// The same client with another read/write timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn transport(&self, reason: impl std::fmt::Display) -> VmmError {
        VmmError::Transport {
            backend: BACKEND,
            socket: self.socket.clone(),
            reason: reason.to_string(),
        }
    }

    /// Sends one request (`endpoint` like `vm.info`) and returns the response
    /// whatever its status; only transport and framing failures are errors.
    pub fn request(
        &self,
        method: &str,
        endpoint: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, VmmError> {
        let payload = match body {
            Some(v) => serde_json::to_vec(v)
                .map_err(|e| self.transport(format!("encoding {endpoint}: {e}")))?,
            None => Vec::new(),
        };
        let mut head = format!(
            "{method} /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n"
        );
        if body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        // PUT without a body still says so: some servers wait for a length.
        if body.is_some() || method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", payload.len()));
        }
        head.push_str("\r\n");

        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| self.transport(format!("connect: {e}")))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| self.transport(e))?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(|e| self.transport(e))?;
        let mut message = head.into_bytes();
        message.extend_from_slice(&payload);
        stream
            .write_all(&message)
            .map_err(|e| self.transport(format!("sending {method} {endpoint}: {e}")))?;
        stream.flush().map_err(|e| self.transport(e))?;
        let mut reader = BufReader::new(stream);
        read_response(&mut reader)
            .map_err(|e| self.transport(format!("reading the answer to {method} {endpoint}: {e}")))
    }

    /// Sends one request; a non-2xx answer becomes [`VmmError::Api`] quoting
    /// Cloud Hypervisor's error body. Returns the body of a 2xx answer.
    pub fn call(
        &self,
        method: &str,
        endpoint: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, VmmError> {
        let response = self.request(method, endpoint, body)?;
        if response.is_success() {
            return Ok(response.body);
        }
        let text = error_text(&response.body);
        let text = text.trim();
        Err(VmmError::Api {
            backend: BACKEND,
            operation: endpoint.to_string(),
            reason: if text.is_empty() {
                format!("HTTP {}", response.status)
            } else {
                format!("HTTP {}: {text}", response.status)
            },
        })
    }

    /// `GET endpoint`, decoding a JSON body.
    pub fn get_json(&self, endpoint: &str) -> Result<serde_json::Value, VmmError> {
        let body = self.call("GET", endpoint, None)?;
        serde_json::from_slice(&body)
            .map_err(|e| self.transport(format!("{endpoint} answered with invalid JSON: {e}")))
    }

    /// `PUT endpoint` with an optional JSON body; returns the answer's body.
    pub fn put(
        &self,
        endpoint: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, VmmError> {
        self.call("PUT", endpoint, body)
    }
}

/// The readable text of an error body, at most [`MAX_QUOTED_ERROR_BYTES`].
///
/// Cloud Hypervisor (v54) answers errors with a JSON array of the error
/// chain's messages, outermost first (`["Error from API","The VM could not
/// boot",...]`); they are joined with ": " as its own log does. Any other
/// body is quoted as text.
pub fn error_text(body: &[u8]) -> String {
    let chain: Option<Vec<String>> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.as_array()?
                .iter()
                .map(|m| m.as_str().map(str::to_owned))
                .collect()
        });
    let text = match chain {
        Some(messages) if !messages.is_empty() => messages.join(": "),
        _ => String::from_utf8_lossy(&body[..body.len().min(MAX_QUOTED_ERROR_BYTES)]).into_owned(),
    };
    let mut end = text.len().min(MAX_QUOTED_ERROR_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Reads one line ending in LF (CR before it removed), at most `MAX_LINE_BYTES`.
fn read_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = Vec::new();
    r.by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_LINE_BYTES {
            format!("line longer than {MAX_LINE_BYTES} bytes")
        } else {
            "connection closed in the middle of the headers".into()
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| "header line is not UTF-8".to_string())
}

fn read_exact_bounded(r: &mut impl BufRead, len: usize, body: &mut Vec<u8>) -> Result<(), String> {
    if body.len().saturating_add(len) > MAX_BODY_BYTES {
        return Err(format!("body larger than {MAX_BODY_BYTES} bytes"));
    }
    let start = body.len();
    body.resize(start + len, 0);
    r.read_exact(&mut body[start..])
        .map_err(|e| format!("body shorter than announced: {e}"))
}

/// Parses one HTTP/1.x response: status line, headers, then a body framed by
/// `Content-Length`, `Transfer-Encoding: chunked`, or the end of the stream.
/// Never panics on any input; every size is bounded.
pub fn read_response(r: &mut impl BufRead) -> Result<Response, String> {
    let status_line = read_line(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!(
            "expected an HTTP/1.x status line, got {:?}",
            truncate(&status_line)
        ));
    }
    let code = parts.next().unwrap_or_default();
    let status: u16 = match code.parse() {
        Ok(s) if code.len() == 3 && (100..600).contains(&s) => s,
        _ => return Err(format!("bad status code {:?}", truncate(code))),
    };

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut headers = 0usize;
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(format!("more than {MAX_HEADERS} headers"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("header without a colon: {:?}", truncate(&line)));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {:?}", truncate(value)))?;
            if content_length.is_some_and(|old| old != n) {
                return Err("conflicting Content-Length headers".into());
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only "chunked" is meaningful for a local API; anything else is refused.
            if value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if !value.eq_ignore_ascii_case("identity") {
                return Err(format!(
                    "unsupported Transfer-Encoding {:?}",
                    truncate(value)
                ));
            }
        }
    }

    let mut body = Vec::new();
    // 1xx, 204 and 304 never have a body.
    if status < 200 || status == 204 || status == 304 {
        return Ok(Response { status, body });
    }
    if chunked {
        loop {
            let line = read_line(r)?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {:?}", truncate(&line)))?;
            if size == 0 {
                // Trailers, then the empty line; a server that closes right
                // after the last chunk is forgiven.
                for _ in 0..=MAX_HEADERS {
                    match read_line(r) {
                        Ok(l) if l.is_empty() => return Ok(Response { status, body }),
                        Ok(_) => continue,
                        Err(_) => return Ok(Response { status, body }),
                    }
                }
                return Err(format!("more than {MAX_HEADERS} trailers"));
            }
            read_exact_bounded(r, size, &mut body)?;
            let end = read_line(r)?;
            if !end.is_empty() {
                return Err("chunk not followed by CRLF".into());
            }
        }
    }
    match content_length {
        Some(n) => read_exact_bounded(r, n, &mut body)?,
        None => {
            // Framed by the end of the connection (we sent Connection: close).
            r.take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut body)
                .map_err(|e| e.to_string())?;
            if body.len() > MAX_BODY_BYTES {
                return Err(format!("body larger than {MAX_BODY_BYTES} bytes"));
            }
        }
    }
    Ok(Response { status, body })
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Response, String> {
        read_response(&mut std::io::Cursor::new(bytes))
    }

    #[test]
    fn content_length_body() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}trailing").unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                body: b"{}".to_vec()
            }
        );
    }

    #[test]
    fn no_content_has_no_body() {
        let r = parse(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Response {
                status: 204,
                body: vec![]
            }
        );
    }

    #[test]
    fn chunked_body_with_extension_and_trailer() {
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n").unwrap();
        assert_eq!(r.body, b"abcde");
    }

    #[test]
    fn body_until_close_without_length() {
        let r = parse(b"HTTP/1.0 500 Internal Server Error\r\n\r\nboom").unwrap();
        assert_eq!(
            r,
            Response {
                status: 500,
                body: b"boom".to_vec()
            }
        );
    }

    #[test]
    fn cloud_hypervisor_status_lines_without_a_reason_phrase() {
        // What v54 actually sends: "HTTP/1.1 204 " (code, space, no reason).
        let r = parse(
            b"HTTP/1.1 204 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 204);
        let r =
            parse(b"HTTP/1.1 200 \r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
        assert_eq!(parse(b"HTTP/1.1 404\r\n\r\n").unwrap().status, 404);
    }

    #[test]
    fn error_chains_are_joined_and_other_bodies_quoted() {
        assert_eq!(
            error_text(br#"["Error from API","The VM could not boot","VM config is missing"]"#),
            "Error from API: The VM could not boot: VM config is missing"
        );
        assert_eq!(
            error_text(b"Error from API: plain"),
            "Error from API: plain"
        );
        assert_eq!(error_text(br#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(error_text(b"[1,2]"), "[1,2]");
        assert_eq!(error_text(&vec![b'x'; 5000]).len(), MAX_QUOTED_ERROR_BYTES);
    }

    #[test]
    fn malformed_responses_are_errors() {
        for bad in [
            &b""[..],
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            assert!(
                parse(bad).is_err(),
                "{:?} should be refused",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn oversized_lines_and_header_counts_are_refused() {
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES + 10));
        long.extend_from_slice(b"\r\n\r\n");
        assert!(parse(&long).unwrap_err().contains("longer"));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"X: 1\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert!(parse(&many).unwrap_err().contains("headers"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn arbitrary_tails_after_a_valid_status_line_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..1024)) {
            let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            bytes.extend_from_slice(&tail);
            let _ = parse(&bytes);
        }
    }
}
