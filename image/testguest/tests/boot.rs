//! Boots the test guest under QEMU (software emulation, TCG) and checks the
//! serial READY line and HTTP through a user-network port forward.
//!
//! If QEMU is missing and we run as root on a Debian host, the test installs
//! `qemu-system-x86` with apt-get. If QEMU or the packages cannot be had, it
//! prints "skipped: <reason>" and returns. A SHA-256 mismatch or a broken
//! `packages.lock` fails the test.

use dc_test_guest::{TestGuest, HTTP_BODY, READY_LINE};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const QEMU: &str = "qemu-system-x86_64";

fn on_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(bin)).find(|p| p.is_file())
}

fn ensure_qemu() -> Result<PathBuf, String> {
    if let Some(p) = on_path(QEMU) {
        return Ok(p);
    }
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !is_root || on_path("apt-get").is_none() {
        return Err(format!("{QEMU} not found and cannot install it (needs root and apt-get)"));
    }
    eprintln!("{QEMU} missing: installing qemu-system-x86 with apt-get");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        install();
    }
    on_path(QEMU).ok_or_else(|| format!("{QEMU} still not found after `apt-get install qemu-system-x86`"))
}

/// Kills QEMU when the test ends, pass or fail.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_string(), body.to_string()))
}

fn serial(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

#[test]
fn boots_and_serves_http() {
    let t0 = Instant::now();
    let guest = match TestGuest::prepare() {
        Ok(g) => g,
        // A bad lock file or a hash mismatch is a defect, not a missing
        // environment: fail.
        Err(e) if e.contains("SHA-256 mismatch") || e.contains("packages.lock") => {
            panic!("preparing the test guest: {e}")
        }
        Err(e) => {
            println!("skipped: cannot prepare the test guest: {e}");
            eprintln!("skipped: cannot prepare the test guest: {e}");
            return;
        }
    };
    eprintln!("prepare() took {:?}: {guest:?}", t0.elapsed());
    // Second call hits the cache and returns the same paths.
    assert_eq!(TestGuest::prepare().unwrap(), guest);

    let qemu = match ensure_qemu() {
        Ok(q) => q,
        Err(e) => {
            println!("skipped: {e}");
            eprintln!("skipped: {e}");
            return;
        }
    };

    let dir = std::env::temp_dir().join(format!("dc-test-guest-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("serial.log");
    let port = free_port();
    let started = Instant::now();
    let child = Command::new(&qemu)
        .args(["-machine", "q35,accel=tcg", "-m", "256", "-nographic", "-nodefaults", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(["-netdev", &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:80")])
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initrd)
        .args(["-append", &guest.cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", qemu.display()));
    let mut qemu_proc = Guard(child);

    let deadline = started + Duration::from_secs(60);
    loop {
        if serial(&log).contains(READY_LINE) {
            break;
        }
        if let Ok(Some(status)) = qemu_proc.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = qemu_proc.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("QEMU exited ({status}) before the READY line.\nstderr: {err}\nserial:\n{}", serial(&log));
        }
        if Instant::now() > deadline {
            panic!("no {READY_LINE:?} on the serial console within 60 s; serial log:\n{}", serial(&log));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready_after = started.elapsed();
    eprintln!("guest READY after {ready_after:?}");

    let http_deadline = Instant::now() + Duration::from_secs(30);
    let (head, body) = loop {
        match http_get(port) {
            Ok((head, body)) if head.starts_with("HTTP/") => break (head, body),
            other if Instant::now() > http_deadline => {
                panic!("no HTTP answer through the port forward: {other:?}; serial log:\n{}", serial(&log))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(head.starts_with("HTTP/1.") && head.contains(" 200 "), "bad status: {head}");
    assert_eq!(body, HTTP_BODY);
    eprintln!("HTTP GET ok after {:?} (ready after {ready_after:?})", started.elapsed());
    drop(qemu_proc);
    let _ = std::fs::remove_dir_all(&dir);
}
