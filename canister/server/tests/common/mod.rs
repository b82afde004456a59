//! Starts `dc-ledger` as a separate process, as operators run it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dc_identity::Identity;

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts the binary on a free port and waits for its URL.
    pub fn start(data: &Path, genesis: Option<&Path>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dc-ledger"));
        cmd.arg("serve").arg("--data").arg(data).arg("--listen").arg("127.0.0.1:0");
        if let Some(g) = genesis {
            cmd.arg("--genesis").arg(g);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn dc-ledger");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut reader = BufReader::new(stdout);
        while Instant::now() < deadline {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("dc-ledger exited before it was ready");
            }
            if let Some(url) = line.trim().strip_prefix("dc-ledger listening on ") {
                return Server { child, url: url.to_string() };
            }
        }
        panic!("dc-ledger did not become ready");
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn identity(n: u8) -> Identity {
    Identity::from_secret_bytes([n; 32])
}

/// A genesis giving each of `funded` 1,000 DCT; treasury is identity 250.
pub fn write_genesis(dir: &Path, funded: &[&Identity], block_interval_secs: u64) -> std::path::PathBuf {
    let mut text = format!(
        "treasury = \"{}\"\n[params]\nblock_interval_secs = {block_interval_secs}\n",
        identity(250).principal()
    );
    for id in funded {
        text.push_str(&format!("[[balances]]\nprincipal = \"{}\"\namount_e9s = 1000000000000\n", id.principal()));
    }
    let path = dir.join("genesis.toml");
    std::fs::write(&path, text).expect("write genesis");
    path
}
