//! A small blocking QMP client (QEMU Machine Protocol, JSON lines over a Unix
//! socket).
//!
//! The exchange: the server greets (`{"QMP": {...}}`), the client sends
//! `qmp_capabilities`, then commands carrying an `id`; the server answers
//! `{"return": ..., "id": ...}` or `{"error": {"class", "desc"}, "id": ...}`
//! and may interleave asynchronous `{"event": ...}` messages at any time,
//! which are skipped. Every read has a timeout and every line a length bound,
//! so a hung or hostile QEMU cannot block or exhaust the supervisor.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dc_vmm::VmmError;
use serde_json::{json, Value};

const BACKEND: &str = "qemu";

/// Longest QMP message accepted (answers such as `query-qmp-schema` are far
/// larger than anything we ask for; ours stay well under this).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Default per-command deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One message from the server, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum QmpMessage {
    /// `{"QMP": {"version": ..., "capabilities": [...]}}`
    Greeting(Value),
    /// A successful answer.
    Return { id: Option<Value>, value: Value },
    /// A failed answer: QEMU's error class and human-readable description.
    Error { id: Option<Value>, class: String, desc: String },
    /// An asynchronous event (`SHUTDOWN`, `DEVICE_DELETED`, ...).
    Event { name: String, data: Value },
}

/// Parses one line the server sent. Never panics, whatever the bytes.
pub fn parse_message(line: &[u8]) -> Result<QmpMessage, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object".into());
    };
    if let Some(greeting) = object.remove("QMP") {
        return Ok(QmpMessage::Greeting(greeting));
    }
    let id = object.remove("id");
    if let Some(value) = object.remove("return") {
        return Ok(QmpMessage::Return { id, value });
    }
    if let Some(error) = object.remove("error") {
        let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or("").to_string();
        let (class, desc) = (field("class"), field("desc"));
        if desc.is_empty() && class.is_empty() {
            return Err("error reply without class or desc".into());
        }
        return Ok(QmpMessage::Error { id, class, desc });
    }
    if let Some(event) = object.remove("event") {
        let name = event.as_str().ok_or("event name is not a string")?.to_string();
        let data = object.remove("data").unwrap_or(Value::Null);
        return Ok(QmpMessage::Event { name, data });
    }
    Err("neither greeting, return, error nor event".into())
}

/// A connected, negotiated QMP session.
pub struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: PathBuf,
    timeout: Duration,
    next_id: u64,
}

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpClient").field("socket", &self.socket).finish_non_exhaustive()
    }
}

impl QmpClient {
    /// Connects, reads the greeting and negotiates capabilities, each step
    /// bounded by `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, VmmError> {
        let transport = |reason: String| VmmError::Transport { backend: BACKEND, socket: socket.to_path_buf(), reason };
        let stream = UnixStream::connect(socket).map_err(|e| transport(format!("connect: {e}")))?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| transport(e.to_string()))?;
        let writer = stream.try_clone().map_err(|e| transport(e.to_string()))?;
        let mut client = QmpClient {
            reader: BufReader::new(stream),
            writer,
            socket: socket.to_path_buf(),
            timeout,
            next_id: 1,
        };
        let deadline = Instant::now() + timeout;
        loop {
            match client.read_message(deadline, "greeting")? {
                QmpMessage::Greeting(_) => break,
                QmpMessage::Event { .. } => continue,
                other => return Err(transport(format!("expected the QMP greeting, got {other:?}"))),
            }
        }
        client.execute("qmp_capabilities", None)?;
        Ok(client)
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs `command` and returns its `return` value. QEMU errors become
    /// [`VmmError::Api`] carrying QEMU's `desc`; events in between are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, VmmError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.transport(format!("sending {command}: {e}")))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.read_message(deadline, command)? {
                QmpMessage::Event { name, .. } => {
                    tracing::debug!(socket = %self.socket.display(), event = %name, "QMP event skipped");
                }
                QmpMessage::Return { id: Some(got), value } if got == json!(id) => return Ok(value),
                QmpMessage::Error { id: Some(got), desc, class } if got == json!(id) => {
                    let reason = if desc.is_empty() { class } else { desc };
                    return Err(VmmError::Api { backend: BACKEND, operation: command.to_string(), reason });
                }
                // An answer to an earlier command whose wait timed out, or a
                // stray greeting: not ours, keep waiting.
                other => {
                    tracing::debug!(socket = %self.socket.display(), message = ?other, "QMP message for another request skipped");
                }
            }
        }
    }

    fn transport(&self, reason: String) -> VmmError {
        VmmError::Transport { backend: BACKEND, socket: self.socket.clone(), reason }
    }

    /// Reads one non-empty line before `deadline` and classifies it.
    fn read_message(&mut self, deadline: Instant, waiting_for: &str) -> Result<QmpMessage, VmmError> {
        loop {
            let line = self.read_line(deadline, waiting_for)?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return parse_message(&line).map_err(|e| self.transport(format!("waiting for {waiting_for}: {e}")));
        }
    }

    /// One `\n`-terminated line of at most [`MAX_LINE_BYTES`].
    fn read_line(&mut self, deadline: Instant, waiting_for: &str) -> Result<Vec<u8>, VmmError> {
        let mut line = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timed_out(waiting_for));
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(deadline - now))
                .map_err(|e| self.transport(e.to_string()))?;
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err(self.timed_out(waiting_for));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.transport(format!("reading while waiting for {waiting_for}: {e}"))),
            };
            if available.is_empty() {
                return Err(self.transport(format!("QEMU closed the connection while we waited for {waiting_for}")));
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(end) => (&available[..end + 1], true),
                None => (available, false),
            };
            if line.len() + chunk.len() > MAX_LINE_BYTES + 1 {
                return Err(self.transport(format!("a QMP message longer than {MAX_LINE_BYTES} bytes")));
            }
            line.extend_from_slice(chunk);
            let consumed = chunk.len();
            self.reader.consume(consumed);
            if done {
                line.pop();
                return Ok(line);
            }
        }
    }

    fn timed_out(&self, waiting_for: &str) -> VmmError {
        self.transport(format!("no answer to {waiting_for} within {} ms", self.timeout.as_millis()))
    }

    /// Sends `quit` and accepts either its answer or the connection closing
    /// (QEMU may exit before it answers).
    pub fn quit(&mut self) -> Result<(), VmmError> {
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            Err(VmmError::Transport { reason, .. }) if reason.contains("closed the connection") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

    /// A fake QMP server: greets, then answers each request with what
    /// `respond` returns for it (lines to send, `\n`-joined).
    fn fake_server(
        respond: impl Fn(&Value) -> Vec<String> + Send + 'static,
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            writeln!(writer, "{GREETING}").unwrap();
            let reader = BufReader::new(stream);
            for line in reader.lines() {
                let Ok(line) = line else { return };
                let request: Value = serde_json::from_str(&line).unwrap();
                for answer in respond(&request) {
                    if writeln!(writer, "{answer}").is_err() {
                        return;
                    }
                }
            }
        });
        (dir, socket, handle)
    }

    fn ok(request: &Value, value: Value) -> String {
        json!({"return": value, "id": request["id"]}).to_string()
    }

    #[test]
    fn greeting_capabilities_and_a_command() {
        let (_dir, socket, _server) = fake_server(|req| match req["execute"].as_str() {
            Some("qmp_capabilities") => vec![ok(req, json!({}))],
            Some("query-status") => vec![ok(req, json!({"running": true, "status": "running"}))],
            _ => vec![],
        });
        let mut client = QmpClient::connect(&socket, Duration::from_secs(2)).unwrap();
        let status = client.execute("query-status", None).unwrap();
        assert_eq!(status["status"], "running");
    }

    #[test]
    fn events_before_the_reply_are_skipped() {
        let (_dir, socket, _server) = fake_server(|req| {
            let event = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#.to_string();
            match req["execute"].as_str() {
                Some("qmp_capabilities") => vec![event.clone(), ok(req, json!({}))],
                // An event, a stale answer to another id, then ours.
                Some("stop") => vec![event, json!({"return": {}, "id": 999}).to_string(), ok(req, json!({}))],
                _ => vec![],
            }
        });
        let mut client = QmpClient::connect(&socket, Duration::from_secs(2)).unwrap();
        assert_eq!(client.execute("stop", None).unwrap(), json!({}));
    }

    #[test]
    fn an_error_reply_is_an_api_error_with_qemus_description() {
        let (_dir, socket, _server) = fake_server(|req| match req["execute"].as_str() {
            Some("qmp_capabilities") => vec![ok(req, json!({}))],
            _ => vec![json!({"error": {"class": "GenericError", "desc": "Device 'nope' not found"}, "id": req["id"]})
                .to_string()],
        });
        let mut client = QmpClient::connect(&socket, Duration::from_secs(2)).unwrap();
        let err = client.execute("device_del", Some(json!({"id": "nope"}))).unwrap_err();
        match err {
            VmmError::Api { operation, reason, .. } => {
                assert_eq!(operation, "device_del");
                assert_eq!(reason, "Device 'nope' not found");
            }
            other => panic!("expected an Api error, got {other:?}"),
        }
    }

    #[test]
    fn a_server_that_hangs_times_out() {
        let (_dir, socket, _server) = fake_server(|req| match req["execute"].as_str() {
            Some("qmp_capabilities") => vec![ok(req, json!({}))],
            _ => vec![],
        });
        let mut client = QmpClient::connect(&socket, Duration::from_millis(300)).unwrap();
        let started = Instant::now();
        let err = client.execute("query-status", None).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("no answer to query-status"), "{err}");
    }

    #[test]
    fn a_server_that_never_greets_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let _server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(stream);
        });
        let err = QmpClient::connect(&socket, Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("greeting"), "{err}");
    }

    #[test]
    fn an_endless_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let _server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..(MAX_LINE_BYTES / chunk.len() + 2) {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        let err = QmpClient::connect(&socket, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }

    #[test]
    fn messages_are_classified() {
        assert!(matches!(parse_message(GREETING.as_bytes()), Ok(QmpMessage::Greeting(_))));
        assert_eq!(
            parse_message(br#"{"event": "SHUTDOWN", "data": {"guest": true}}"#),
            Ok(QmpMessage::Event { name: "SHUTDOWN".into(), data: json!({"guest": true}) })
        );
        assert!(parse_message(b"[1,2]").is_err());
        assert!(parse_message(b"{\"error\": 5}").is_err());
        assert!(parse_message(b"{}").is_err());
        assert!(parse_message(b"\xff\xfe").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_server_lines_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_message(&bytes);
        }

        #[test]
        fn arbitrary_json_shaped_lines_never_panic(
            key in proptest::sample::select(vec!["QMP", "return", "error", "event", "id", "data", "desc"]),
            inner in "[ -~]{0,64}",
        ) {
            let _ = parse_message(format!("{{\"{key}\": {inner}}}").as_bytes());
            let _ = parse_message(format!("{{\"error\": {{\"desc\": {inner}}}, \"id\": {inner}}}").as_bytes());
        }
    }
}
