//! A fake Cloud Hypervisor API server on a Unix socket, and spec builders
//! shared by the integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dc_vmm::{Accel, Boot, Confidential, Disk, Network, VfioDevice, VmSpec};

/// One request as the fake server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub type Log = Arc<Mutex<Vec<Recorded>>>;

fn read_request(stream: &mut impl BufRead) -> Option<Recorded> {
    let mut line = String::new();
    stream.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        stream.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        if k.eq_ignore_ascii_case("content-length") {
            len = v.trim().parse().ok()?;
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// Serves `socket` on a thread for the rest of the test process: each
/// connection carries one request, answered with the raw bytes `respond`
/// returns (or closed without an answer when it returns an empty vector).
pub fn serve(socket: &Path, respond: impl Fn(&Recorded) -> Vec<u8> + Send + 'static) -> Log {
    let listener = UnixListener::bind(socket).expect("bind fake socket");
    serve_listener(listener, respond)
}

pub fn serve_listener(
    listener: UnixListener,
    respond: impl Fn(&Recorded) -> Vec<u8> + Send + 'static,
) -> Log {
    let log: Log = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Ok(read_half) = conn.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(read_half);
            // Readiness probes connect and close without a request.
            let Some(req) = read_request(&mut reader) else {
                continue;
            };
            log2.lock().unwrap().push(req.clone());
            let answer = respond(&req);
            if !answer.is_empty() {
                let _ = conn.write_all(&answer);
            }
        }
    });
    log
}

pub fn no_content() -> Vec<u8> {
    b"HTTP/1.1 204 No Content\r\nServer: Cloud Hypervisor API\r\n\r\n".to_vec()
}

pub fn json_ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn chunked_ok(body: &str) -> Vec<u8> {
    let (a, b) = body.split_at(body.len() / 2);
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    )
    .into_bytes()
}

pub fn error(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn base_spec(run_dir: &Path) -> VmSpec {
    VmSpec {
        id: "c42".into(),
        vcpus: 2,
        memory_mib: 512,
        boot: Boot::Kernel {
            kernel: "/var/lib/dc/images/vmlinux".into(),
            initrd: Some("/var/lib/dc/images/initrd.img".into()),
            cmdline: "console=ttyS0 root=/dev/vda1 ro".into(),
            firmware: None,
        },
        disks: vec![Disk {
            path: run_dir.join("root.qcow2"),
            base: Some("/var/lib/dc/images/base.qcow2".into()),
            readonly: false,
            size_gib: None,
        }],
        network: Network::None,
        vsock_cid: None,
        vfio: vec![],
        confidential: Confidential::None,
        accel: Accel::Kvm,
        run_dir: run_dir.to_path_buf(),
    }
}

pub fn firmware_spec(run_dir: &Path) -> VmSpec {
    VmSpec {
        boot: Boot::Firmware {
            firmware: "/usr/share/cloud-hypervisor/CLOUDHV.fd".into(),
        },
        ..base_spec(run_dir)
    }
}

pub fn snp_spec(run_dir: &Path) -> VmSpec {
    let mut host_data = [0u8; 32];
    for (i, b) in host_data.iter_mut().enumerate() {
        *b = i as u8;
    }
    VmSpec {
        boot: Boot::Igvm {
            igvm: "/var/lib/dc/images/guest.igvm".into(),
            cmdline: "console=ttyS0".into(),
        },
        confidential: Confidential::SevSnp {
            policy: 0x30000,
            host_data,
        },
        ..base_spec(run_dir)
    }
}

pub fn gpu_spec(run_dir: &Path) -> VmSpec {
    VmSpec {
        vcpus: 8,
        memory_mib: 65536,
        vfio: vec![
            VfioDevice {
                sysfs_path: "/sys/bus/pci/devices/0000:41:00.0".into(),
            },
            VfioDevice {
                sysfs_path: "/sys/bus/pci/devices/0000:41:00.1".into(),
            },
        ],
        ..base_spec(run_dir)
    }
}

pub fn tap_vsock_spec(run_dir: &Path) -> VmSpec {
    VmSpec {
        network: Network::Tap {
            tap: "dctap42".into(),
            mac: "52:54:00:12:34:56".into(),
        },
        vsock_cid: Some(42),
        disks: vec![
            Disk {
                path: run_dir.join("root.qcow2"),
                base: Some("/var/lib/dc/images/base.qcow2".into()),
                readonly: false,
                size_gib: None,
            },
            Disk {
                path: run_dir.join("seed.raw"),
                base: None,
                readonly: true,
                size_gib: None,
            },
        ],
        ..base_spec(run_dir)
    }
}

/// The run directory used in golden files (paths appear in the JSON).
pub fn golden_run_dir() -> PathBuf {
    PathBuf::from("/run/dc/vms/c42")
}
