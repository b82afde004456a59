//! Commands as values: planned by pure functions, run by one executor.

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::NetError;

/// One command line to run, optionally fed `stdin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Text written to the command's standard input (the nftables script of `nft -f -`).
    pub stdin: Option<String>,
    /// A failure whose stderr contains this text means "already done"
    /// (`File exists`, `Cannot find device`) and counts as success, which
    /// makes the plans idempotent.
    pub ok_if_stderr_contains: Option<&'static str>,
}

impl Cmd {
    /// A command line from its words.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { argv: argv.into_iter().map(Into::into).collect(), stdin: None, ok_if_stderr_contains: None }
    }

    /// Feeds `text` to standard input.
    pub fn with_stdin(mut self, text: String) -> Self {
        self.stdin = Some(text);
        self
    }

    /// Treats a failure whose stderr contains `text` as success.
    pub fn ok_if(mut self, text: &'static str) -> Self {
        self.ok_if_stderr_contains = Some(text);
        self
    }

    /// The same command run inside network namespace `netns` (`ip netns exec`).
    pub fn in_netns(self, netns: Option<&str>) -> Self {
        match netns {
            None => self,
            Some(ns) => {
                let mut argv = vec!["ip".to_string(), "netns".into(), "exec".into(), ns.to_string()];
                argv.extend(self.argv);
                Self { argv, ..self }
            }
        }
    }

    /// Runs the command and returns its stdout; a non-zero exit is an error
    /// carrying the command and its stderr, unless `ok_if_stderr_contains` matches.
    pub fn run(&self) -> Result<String, NetError> {
        let command = self.to_string();
        let (program, args) = self.argv.split_first().ok_or_else(|| NetError::Spawn {
            command: command.clone(),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        tracing::debug!(%command, "running");
        let mut child = Command::new(program)
            .args(args)
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NetError::Spawn { command: command.clone(), source })?;
        if let (Some(text), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            // The script is small (a few KiB): writing it whole before reading
            // the output cannot fill a pipe the child is waiting on.
            pipe.write_all(text.as_bytes()).map_err(|source| NetError::Spawn { command: command.clone(), source })?;
        }
        let output = child.wait_with_output().map_err(|source| NetError::Spawn { command: command.clone(), source })?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        if self.ok_if_stderr_contains.is_some_and(|t| stderr.contains(t)) {
            tracing::debug!(%command, %stderr, "already done");
            return Ok(String::new());
        }
        Err(NetError::CommandFailed { command, status: output.status.to_string(), stderr })
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, word) in self.argv.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(word)?;
        }
        if self.stdin.is_some() {
            f.write_str(" <<script")?;
        }
        Ok(())
    }
}
