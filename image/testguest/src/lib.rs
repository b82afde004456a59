//! `dc-test-guest`: a small, real Linux guest for VMM tests.
//!
//! [`TestGuest::prepare`] returns a kernel, an initramfs and a kernel command
//! line. Booted on an x86-64 VM with one virtio-net NIC on a QEMU-style user
//! network (guest 10.0.2.15/24, gateway 10.0.2.2), the guest prints
//! [`READY_LINE`] on the serial console (ttyS0) and serves [`HTTP_BODY`] over
//! HTTP on port 80, then idles forever.
//!
//! * Kernel: Debian's cloud kernel (`linux-image-*-cloud-amd64`), with the
//!   virtio modules it needs copied into the initramfs.
//! * Userspace: Debian's `busybox-static`, plus a generated `/init` script.
//! * The initramfs is an uncompressed newc cpio written by this crate,
//!   deterministically (sorted entries, mtime 0, uid/gid 0).
//!
//! **Pinning.** `packages.lock` (next to this crate's `Cargo.toml`, compiled
//! in) names each package's exact version and the SHA-256 of its `.deb`.
//! `prepare()` downloads exactly that version with `apt-get download` and
//! verifies the hash; a mismatch is an error. When the mirror no longer has
//! that version (Debian replaces kernels with security updates), it falls back
//! to the mirror's current candidate *without* verification and prints a
//! warning naming both versions to stderr. Run with `DC_UPDATE_LOCK=1` to
//! rewrite `packages.lock` with what the mirror has now.
//!
//! **Cache.** Results are built once into `$DC_CACHE_DIR/test-guest/<key>`
//! (default `~/.cache/dc-tools/test-guest/<key>`), where `<key>` hashes the
//! resolved packages and the build recipe. Builds happen in a private temp
//! dir and are renamed into place, so concurrent test processes are safe.
//! Nothing is installed on the host: packages are only unpacked with
//! `dpkg-deb -x`. Needs a Debian/Ubuntu host with `apt-get` and `dpkg-deb`.
//!
//! This is the *test* guest only; the production appliance image is built
//! separately.

mod cpio;
mod kmod;
mod lock;

use lock::{Lock, Pin, Role};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Printed by the guest on its serial console once the network and the HTTP
/// server are up.
pub const READY_LINE: &str = "dc-test-guest ready";
/// The body of `GET /` on guest port 80.
pub const HTTP_BODY: &str = "dc-test-guest ok";
/// `GET` this path on the guest's port 80 and it powers off (ACPI), as a
/// tenant running `poweroff` would: the answer says [`POWEROFF_ANSWER`], the
/// power-off follows a second later.
pub const POWEROFF_PATH: &str = "/cgi-bin/poweroff";
/// What [`POWEROFF_PATH`] answers before the guest powers off.
pub const POWEROFF_ANSWER: &str = "dc-test-guest powering off";
/// The CGI script behind [`POWEROFF_PATH`] (busybox httpd runs it).
fn poweroff_cgi() -> String {
    format!("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n{POWEROFF_ANSWER}\\n'\n(sleep 1; poweroff -f) >/dev/null 2>&1 &\n")
}

/// The guest's static address, gateway and the modules it loads match QEMU's
/// user networking defaults.
const GUEST_ADDR: &str = "10.0.2.15/24";
const GUEST_GW: &str = "10.0.2.2";
const CMDLINE: &str = "console=ttyS0 panic=-1 quiet";
/// Modules the guest needs for a virtio-net PCI NIC (dependencies are added
/// automatically; built-in ones are skipped).
const MODULE_ROOTS: &[&str] = &["virtio_pci", "virtio_net"];
const APPLETS: &[&str] = &[
    "cat", "dmesg", "echo", "halt", "httpd", "ifconfig", "insmod", "ip", "kill", "ls", "mkdir", "mount", "nc",
    "poweroff", "printf", "ps", "reboot", "route", "sh", "sleep", "umount", "usleep", "wget",
];
/// Bump when the way the guest is assembled changes.
const RECIPE_VERSION: &str = "dc-test-guest recipe 3";
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

pub(crate) const LOCK_TEXT: &str = include_str!("../packages.lock");

/// A bootable guest: pass `kernel`, `initrd` and `cmdline` to the VMM
/// (`-kernel`, `-initrd`, `-append` in QEMU terms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

impl TestGuest {
    /// Build (once; later calls hit the cache) and return the test guest.
    /// Errors say which step failed and why (no apt, no network, hash
    /// mismatch, ...); callers in tests typically print them and skip.
    pub fn prepare() -> Result<TestGuest, String> {
        // Tests in one binary run on threads: build once per process.
        static MEMO: std::sync::Mutex<Option<TestGuest>> = std::sync::Mutex::new(None);
        let mut memo = MEMO.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(g) = memo.as_ref() {
            return Ok(g.clone());
        }
        let g = prepare_uncached()?;
        *memo = Some(g.clone());
        Ok(g)
    }
}

fn prepare_uncached() -> Result<TestGuest, String> {
    let lock = Lock::parse(LOCK_TEXT)?;
    let root = cache_root()?;
    let update = std::env::var("DC_UPDATE_LOCK").is_ok_and(|v| v == "1");
    let pinned: Vec<Resolved> = lock.pins.iter().map(|p| Resolved { pin: p.clone(), verify: true }).collect();
    let pinned_key = cache_key(&pinned);
    let redirect = root.join(format!("{pinned_key}.fallback"));
    if !update {
        if let Some(g) = cached(&root.join(&pinned_key)) {
            return Ok(g);
        }
        // An earlier process fell back to unpinned packages for this lock:
        // reuse its result (and repeat its warning) without asking apt again.
        if let Ok(text) = std::fs::read_to_string(&redirect) {
            let mut lines = text.lines();
            let target = lines.next().unwrap_or("");
            let valid = !target.is_empty() && !target.contains('/') && !target.starts_with('.');
            if let Some(g) = valid.then(|| cached(&root.join(target))).flatten() {
                for w in lines {
                    eprintln!("{w}");
                }
                return Ok(g);
            }
        }
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("creating cache dir {}: {e}", root.display()))?;
    remove_stale_temp_dirs(&root);
    let mut apt = Apt { updated: false, warnings: Vec::new() };
    let mut attempt = 0;
    let (dir, resolved, built) = loop {
        attempt += 1;
        apt.warnings.clear();
        let mut resolved = Vec::new();
        for pin in &lock.pins {
            resolved.push(if update { apt.current(pin.role)? } else { apt.resolve(pin)? });
        }
        let dir = root.join(cache_key(&resolved));
        if !update && cached(&dir).is_some() {
            break (dir, resolved, None);
        }
        eprintln!("dc-test-guest: building the test guest into {} (one time)", dir.display());
        let work = TempDir::new(&root)?;
        match build(&mut apt, &resolved, work.path(), &dir) {
            Ok(built) => break (dir, resolved, Some(built)),
            // A download failed although the (possibly stale) index listed
            // the version; the index has been refreshed since, so resolve
            // again (this is where a replaced kernel falls back).
            Err(BuildError { retry: true, msg }) if attempt == 1 => {
                eprintln!("dc-test-guest: {msg}; resolving the packages again");
            }
            Err(e) => return Err(e.msg),
        }
    };
    if update {
        let built = built.unwrap_or_default();
        let new_lock = Lock { pins: built.iter().map(|r| r.pin.clone()).collect() };
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packages.lock");
        std::fs::write(&path, new_lock.render()).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("dc-test-guest: DC_UPDATE_LOCK=1: rewrote {}", path.display());
        for r in &built {
            eprintln!("dc-test-guest:   {} {} {} {}", r.pin.role, r.pin.package, r.pin.version, r.pin.sha256);
        }
    } else if resolved.iter().any(|r| !r.verify) {
        if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
            let mut text = format!("{name}\n");
            for w in &apt.warnings {
                text.push_str(&format!("{w} (cached decision; delete {} to re-check)\n", redirect.display()));
            }
            // Best effort, written atomically.
            let tmp = root.join(format!(".tmp-redirect-{}", std::process::id()));
            if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, &redirect).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
    cached(&dir).ok_or_else(|| format!("test guest in {} is incomplete after building it", dir.display()))
}

/// A package version to use, and whether its SHA-256 must match the lock.
#[derive(Clone, Debug)]
struct Resolved {
    pin: Pin,
    verify: bool,
}

fn cache_root() -> Result<PathBuf, String> {
    let base = match std::env::var_os("DC_CACHE_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .ok_or("neither DC_CACHE_DIR nor HOME is set: no place for the test-guest cache")?;
            PathBuf::from(home).join(".cache").join("dc-tools")
        }
    };
    Ok(base.join("test-guest"))
}

fn cache_key(resolved: &[Resolved]) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION);
    h.update([0]);
    h.update(init_script(&["<modules>".to_string()]));
    h.update([0]);
    h.update(poweroff_cgi());
    h.update([0]);
    h.update(CMDLINE);
    h.update([0]);
    h.update(MODULE_ROOTS.join(","));
    h.update([0]);
    h.update(APPLETS.join(","));
    h.update([0]);
    for r in resolved {
        let sha = if r.verify { r.pin.sha256.as_str() } else { "unverified" };
        h.update(format!("{} {} {} {}\n", r.pin.role, r.pin.package, r.pin.version, sha));
    }
    hex::encode(&h.finalize()[..12])
}

const KERNEL_FILE: &str = "vmlinuz";
const INITRD_FILE: &str = "initrd.cpio";
const MANIFEST_FILE: &str = "manifest.txt";

fn cached(dir: &Path) -> Option<TestGuest> {
    let g = TestGuest { kernel: dir.join(KERNEL_FILE), initrd: dir.join(INITRD_FILE), cmdline: CMDLINE.to_string() };
    // The manifest is written last, so its presence means a complete build
    // (and the directory only appears by an atomic rename anyway).
    (g.kernel.is_file() && g.initrd.is_file() && dir.join(MANIFEST_FILE).is_file()).then_some(g)
}

/// Remove `.tmp-*` build dirs and files older than an hour (left by killed processes).
fn remove_stale_temp_dirs(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else { return };
    for ent in rd.flatten() {
        let stale = ent.file_name().to_str().is_some_and(|n| n.starts_with(".tmp-"))
            && ent
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if stale {
            let _ = match ent.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(ent.path()),
                _ => std::fs::remove_file(ent.path()),
            };
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path) -> Result<TempDir, String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = parent.join(format!(".tmp-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir(&p).map_err(|e| format!("creating temp dir {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("could not run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Talks to apt; runs `apt-get update` at most once.
struct Apt {
    updated: bool,
    /// Fallback warnings printed so far (repeated from the cache later).
    warnings: Vec<String>,
}

impl Apt {
    fn update_once(&mut self) {
        if self.updated {
            return;
        }
        self.updated = true;
        eprintln!("dc-test-guest: running `apt-get update` (package index missing or stale)");
        if let Err(e) = run(Command::new("apt-get").args(["update", "-qq"])) {
            eprintln!("dc-test-guest: apt-get update failed (continuing): {e}");
        }
    }

    fn knows(&self, package: &str, version: &str) -> bool {
        Command::new("apt-cache")
            .args(["show", "--no-all-versions", &format!("{package}={version}")])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
    }

    fn candidate(&mut self, package: &str) -> Result<String, String> {
        for attempt in 0..2 {
            let out = run(Command::new("apt-cache").args(["policy", package]))?;
            let cand = out
                .lines()
                .find_map(|l| l.trim().strip_prefix("Candidate:"))
                .map(|c| c.trim().to_string())
                .filter(|c| c != "(none)");
            if let Some(c) = cand {
                return Ok(c);
            }
            if attempt == 0 {
                self.update_once();
            }
        }
        Err(format!("apt has no installable candidate for package {package:?} (is this a Debian host with a reachable mirror?)"))
    }

    /// The package the mirror currently offers for `role`.
    fn current(&mut self, role: Role) -> Result<Resolved, String> {
        let package = match role {
            Role::Busybox => "busybox-static".to_string(),
            Role::Kernel => {
                // Follow the metapackage: the versioned package name changes
                // with each kernel ABI bump.
                let version = self.candidate(KERNEL_METAPACKAGE)?;
                let out = run(Command::new("apt-cache").args([
                    "show",
                    "--no-all-versions",
                    &format!("{KERNEL_METAPACKAGE}={version}"),
                ]))?;
                out.lines()
                    .find_map(|l| l.strip_prefix("Depends:"))
                    .and_then(|deps| {
                        deps.split(',')
                            .map(|d| d.split_whitespace().next().unwrap_or(""))
                            .find(|d| d.starts_with("linux-image-") && d.ends_with("-cloud-amd64"))
                    })
                    .map(str::to_string)
                    .ok_or_else(|| format!("could not find the linux-image-*-cloud-amd64 dependency of {KERNEL_METAPACKAGE}"))?
            }
        };
        let version = self.candidate(&package)?;
        Ok(Resolved { pin: Pin { role, package, version, sha256: String::new() }, verify: false })
    }

    /// The pinned version if apt knows it, else the current candidate (with a
    /// warning).
    fn resolve(&mut self, pin: &Pin) -> Result<Resolved, String> {
        if self.knows(&pin.package, &pin.version) {
            return Ok(Resolved { pin: pin.clone(), verify: true });
        }
        self.update_once();
        if self.knows(&pin.package, &pin.version) {
            return Ok(Resolved { pin: pin.clone(), verify: true });
        }
        let cur = self.current(pin.role)?;
        let warning = format!(
            "dc-test-guest: WARNING: pinned {} {}={} is not on the mirror any more; using {}={} WITHOUT \
             SHA-256 verification. Refresh the pin with `DC_UPDATE_LOCK=1 cargo test -p dc-test-guest`.",
            pin.role, pin.package, pin.version, cur.pin.package, cur.pin.version
        );
        eprintln!("{warning}");
        self.warnings.push(warning);
        Ok(cur)
    }

    /// Download `r` into `dir` (which must be empty) and return the .deb path.
    fn download(&mut self, r: &Resolved, dir: &Path) -> Result<PathBuf, String> {
        let spec = format!("{}={}", r.pin.package, r.pin.version);
        let mut result = run(Command::new("apt-get").args(["download", "-qq", &spec]).current_dir(dir));
        if result.is_err() && !self.updated {
            self.update_once();
            result = run(Command::new("apt-get").args(["download", "-qq", &spec]).current_dir(dir));
        }
        result.map_err(|e| format!("downloading {spec}: {e}"))?;
        let debs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        match &debs[..] {
            [one] => Ok(one.clone()),
            _ => Err(format!("`apt-get download {spec}` left {} .deb files in {}, expected 1", debs.len(), dir.display())),
        }
    }
}

fn sha256_file(path: &Path) -> Result<String, String> {
    let data = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&data)))
}

/// The single entry of `dir` whose name starts with `prefix`.
fn only_entry(dir: &Path, prefix: &str) -> Result<PathBuf, String> {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    match &found[..] {
        [one] => Ok(one.clone()),
        _ => Err(format!("expected exactly one {prefix}* in {}, found {}", dir.display(), found.len())),
    }
}

/// Why [`build`] failed; `retry` when a download failed (worth resolving
/// again after the index was refreshed).
struct BuildError {
    msg: String,
    retry: bool,
}

impl From<String> for BuildError {
    fn from(msg: String) -> Self {
        BuildError { msg, retry: false }
    }
}

impl From<&str> for BuildError {
    fn from(msg: &str) -> Self {
        BuildError { msg: msg.to_string(), retry: false }
    }
}

/// Download, verify, unpack and assemble; the result is renamed to `dest`.
/// Returns the resolved packages with their actual SHA-256.
fn build(apt: &mut Apt, resolved: &[Resolved], work: &Path, dest: &Path) -> Result<Vec<Resolved>, BuildError> {
    let mut actual = Vec::new();
    let mut trees = std::collections::BTreeMap::new();
    for r in resolved {
        let dl = work.join(format!("dl-{}", r.pin.role));
        std::fs::create_dir(&dl).map_err(|e| format!("creating {}: {e}", dl.display()))?;
        let deb = apt.download(r, &dl).map_err(|msg| BuildError { msg, retry: apt.updated })?;
        let sha = sha256_file(&deb)?;
        if r.verify && sha != r.pin.sha256 {
            return Err(BuildError::from(format!(
                "SHA-256 mismatch for {}={}: packages.lock says {}, downloaded {} has {sha}",
                r.pin.package,
                r.pin.version,
                r.pin.sha256,
                deb.display()
            )));
        }
        let tree = work.join(format!("x-{}", r.pin.role));
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))
            .map_err(|e| format!("unpacking {}: {e}", deb.display()))?;
        let _ = std::fs::remove_file(&deb);
        trees.insert(r.pin.role, tree);
        actual.push(Resolved { pin: Pin { sha256: sha, ..r.pin.clone() }, verify: r.verify });
    }
    let ktree = trees.get(&Role::Kernel).ok_or("no kernel package in packages.lock")?;
    let btree = trees.get(&Role::Busybox).ok_or("no busybox package in packages.lock")?;

    let vmlinuz = only_entry(&ktree.join("boot"), "vmlinuz-")?;
    let config_path = only_entry(&ktree.join("boot"), "config-")?;
    let config = std::fs::read_to_string(&config_path).map_err(|e| format!("reading {}: {e}", config_path.display()))?;
    for needed in ["CONFIG_BLK_DEV_INITRD=y", "CONFIG_DEVTMPFS=y", "CONFIG_SERIAL_8250_CONSOLE=y"] {
        if !config.lines().any(|l| l == needed) {
            return Err(format!("kernel config {} lacks {needed}, which the test guest needs", config_path.display()).into());
        }
    }
    let moddir = only_entry(&ktree.join("lib/modules"), "")?;
    let modules = kmod::resolve(&moddir, MODULE_ROOTS)?;
    let busybox_path = btree.join("bin/busybox");
    let busybox = std::fs::read(&busybox_path).map_err(|e| format!("reading {}: {e}", busybox_path.display()))?;

    let names: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
    let initrd = cpio::write_newc(&initramfs_entries(busybox, &modules, &names))?;

    let out = work.join("out");
    std::fs::create_dir(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    std::fs::copy(&vmlinuz, out.join(KERNEL_FILE))
        .map_err(|e| format!("copying {} to the cache: {e}", vmlinuz.display()))?;
    std::fs::write(out.join(INITRD_FILE), &initrd).map_err(|e| format!("writing the initramfs: {e}"))?;
    let mut manifest = format!("{RECIPE_VERSION}\ncmdline {CMDLINE}\nmodules {}\n", names.join(" "));
    for r in &actual {
        manifest.push_str(&format!(
            "{} {} {} {} {}\n",
            r.pin.role,
            r.pin.package,
            r.pin.version,
            r.pin.sha256,
            if r.verify { "verified" } else { "UNVERIFIED" }
        ));
    }
    std::fs::write(out.join(MANIFEST_FILE), manifest).map_err(|e| format!("writing the manifest: {e}"))?;
    if let Err(e) = std::fs::rename(&out, dest) {
        // Another process may have won the race; its result is as good.
        if cached(dest).is_none() {
            return Err(format!("moving the built guest to {}: {e}", dest.display()).into());
        }
    }
    Ok(actual)
}

fn initramfs_entries(busybox: Vec<u8>, modules: &[kmod::Module], names: &[String]) -> Vec<cpio::Entry> {
    use cpio::{Entry, Kind};
    let dir = |p: &str| Entry { path: p.into(), kind: Kind::Dir { perm: 0o755 } };
    let mut v = vec![
        dir("bin"),
        dir("dev"),
        dir("lib"),
        dir("lib/modules"),
        dir("proc"),
        dir("sys"),
        dir("tmp"),
        dir("www"),
        dir("www/cgi-bin"),
        Entry { path: "www/cgi-bin/poweroff".into(), kind: Kind::File { perm: 0o755, data: poweroff_cgi().into_bytes() } },
        // The kernel opens /dev/console for init's stdio before /init runs.
        Entry { path: "dev/console".into(), kind: Kind::CharDev { perm: 0o600, major: 5, minor: 1 } },
        Entry { path: "bin/busybox".into(), kind: Kind::File { perm: 0o755, data: busybox } },
        Entry { path: "init".into(), kind: Kind::File { perm: 0o755, data: init_script(names).into_bytes() } },
    ];
    for a in APPLETS {
        v.push(Entry { path: format!("bin/{a}"), kind: Kind::Symlink { target: "busybox".into() } });
    }
    for m in modules {
        v.push(Entry { path: format!("lib/modules/{}.ko", m.name), kind: Kind::File { perm: 0o644, data: m.data.clone() } });
    }
    v
}

fn init_script(modules: &[String]) -> String {
    format!(
        r#"#!/bin/sh
# dc-test-guest /init (generated by the dc-test-guest crate)
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do
    insmod /lib/modules/$m.ko || echo "dc-test-guest: insmod $m failed" > /dev/console
done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do usleep 50000; i=$((i+1)); done
if [ ! -e /sys/class/net/eth0 ]; then
    echo "dc-test-guest: no eth0 (is there a virtio-net NIC?)" > /dev/console
fi
ip link set eth0 up
# A static address from the kernel's ip= argument (bridge networking:
# ip=ADDR::GATEWAY:NETMASK::DEVICE:off), else QEMU user networking's.
ip_addr=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ip=*:*)
            old_ifs=$IFS
            IFS=:
            set -- ${{arg#ip=}}
            IFS=$old_ifs
            ip_addr=$1 ip_gw=$3 ip_mask=$4
            ;;
    esac
done
if [ -n "$ip_addr" ]; then
    ifconfig eth0 "$ip_addr" netmask "$ip_mask" up
    ip route add default via "$ip_gw"
else
    ip addr add {GUEST_ADDR} dev eth0
    ip route add default via {GUEST_GW}
fi
printf '%s' '{HTTP_BODY}' > /www/index.html
httpd -p 80 -h /www
echo '{READY_LINE}' > /dev/console
# Also on the first serial port when the console is elsewhere.
case " $(cat /proc/cmdline) " in
    *" console=ttyS0"*) ;;
    *) [ -c /dev/ttyS0 ] && echo '{READY_LINE}' > /dev/ttyS0 ;;
esac
while true; do sleep 3600; done
"#,
        modules = modules.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_mentions_everything() {
        let s = init_script(&["virtio".into(), "virtio_net".into()]);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("for m in virtio virtio_net; do"));
        assert!(s.contains(READY_LINE) && s.contains(HTTP_BODY));
        assert!(s.contains("ip addr add 10.0.2.15/24 dev eth0"));
        assert!(s.contains("set -- ${arg#ip=}"), "ip= is split on colons");
        assert!(s.contains("httpd -p 80 -h /www"));
        for a in ["sh", "mount", "ip", "httpd", "insmod", "usleep", "sleep", "printf"] {
            assert!(APPLETS.contains(&a), "{a}");
        }
    }

    #[test]
    fn cache_key_depends_on_pins_and_verification() {
        let lock = Lock::parse(LOCK_TEXT).unwrap();
        let r: Vec<Resolved> = lock.pins.iter().map(|p| Resolved { pin: p.clone(), verify: true }).collect();
        let k = cache_key(&r);
        assert_eq!(k, cache_key(&r));
        assert_eq!(k.len(), 24);
        let mut r2 = r.clone();
        r2[0].verify = false;
        assert_ne!(k, cache_key(&r2));
        let mut r3 = r.clone();
        r3[1].pin.version.push('1');
        assert_ne!(k, cache_key(&r3));
    }

    #[test]
    fn initramfs_is_deterministic() {
        let mods = vec![kmod::Module { name: "virtio_net".into(), data: vec![1, 2, 3] }];
        let names = vec!["virtio_net".to_string()];
        let a = cpio::write_newc(&initramfs_entries(vec![9; 100], &mods, &names)).unwrap();
        let b = cpio::write_newc(&initramfs_entries(vec![9; 100], &mods, &names)).unwrap();
        assert_eq!(a, b);
        let parsed = cpio::parse::parse_newc(&a).unwrap();
        assert!(parsed.iter().any(|p| p.name == "lib/modules/virtio_net.ko" && p.data == [1, 2, 3]));
        assert!(parsed.iter().any(|p| p.name == "bin/httpd" && p.data == b"busybox"));
        assert!(parsed.iter().any(|p| p.name == "dev/console" && p.rdevmajor == 5 && p.rdevminor == 1));
    }
}
