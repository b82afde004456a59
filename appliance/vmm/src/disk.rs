//! Per-VM disk overlays, shared by both backends.
//!
//! A VM's disk is a qcow2 copy-on-write overlay over a read-only base image,
//! made with `qemu-img` the first time the VM is launched. Its virtual size is
//! the disk's `size_gib` when given. The overlay is never made smaller than
//! the base image's virtual size: a guest whose filesystem and partition
//! table describe more blocks than its disk has would fail at boot or lose
//! writes, so such a disk is refused with an error naming both sizes (rather
//! than silently given the base size, which would differ from what was
//! reserved and promised).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Disk, VmmError};

/// Bytes in a GiB, the unit of [`Disk::size_gib`].
pub const GIB: u64 = 1 << 30;

/// The first executable named `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The format of an existing image, from its first bytes (qcow2 magic, else
/// raw). Named explicitly to every tool afterwards, so nothing ever probes
/// an image a guest could have written a qcow2 header into.
pub fn detect_format(image: &Path) -> Result<&'static str, VmmError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(image).map_err(|e| VmmError::io(image, e))?;
    match file.read_exact(&mut magic) {
        Ok(()) if magic == *b"QFI\xfb" => Ok("qcow2"),
        _ => Ok("raw"),
    }
}

fn run_qemu_img(qemu_img: &Path, args: &[&std::ffi::OsStr], subject: &Path, what: &str) -> Result<Vec<u8>, VmmError> {
    let output = Command::new(qemu_img)
        .args(args)
        .output()
        .map_err(|e| VmmError::Spawn { program: qemu_img.display().to_string(), reason: e.to_string() })?;
    if !output.status.success() {
        return Err(VmmError::Io {
            path: subject.to_path_buf(),
            reason: format!("{what} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    Ok(output.stdout)
}

/// Virtual size in bytes of `image` read as `format`
/// (`qemu-img info --output=json -f FORMAT IMAGE`).
pub fn virtual_size(qemu_img: &Path, image: &Path, format: &str) -> Result<u64, VmmError> {
    let stdout = run_qemu_img(
        qemu_img,
        &["info".as_ref(), "--output=json".as_ref(), "-f".as_ref(), format.as_ref(), image.as_os_str()],
        image,
        "qemu-img info",
    )?;
    let info: serde_json::Value = serde_json::from_slice(&stdout)
        .map_err(|e| VmmError::io(image, format!("qemu-img info printed no JSON: {e}")))?;
    info.get("virtual-size")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| VmmError::io(image, "qemu-img info reported no virtual-size"))
}

/// Creates `overlay` as a qcow2 copy-on-write layer over `base`
/// (`qemu-img create -f qcow2 -b BASE -F FMT OVERLAY [SIZE]`), the base's
/// format detected from its header and named explicitly.
///
/// With `size_gib`, the overlay's virtual size is that many GiB; a size
/// below the base's virtual size is refused ([`VmmError::InvalidSpec`]).
/// Without it the overlay has the base's size. The file is written under a
/// temporary name and renamed into place, so an interrupted creation never
/// leaves a half-made overlay that a later launch would take as the disk.
pub fn create_overlay(qemu_img: &Path, base: &Path, overlay: &Path, size_gib: Option<u64>) -> Result<(), VmmError> {
    let format = detect_format(base)?;
    let size = match size_gib {
        None => None,
        Some(gib) => {
            let bytes = gib
                .checked_mul(GIB)
                .ok_or_else(|| VmmError::InvalidSpec(format!("disk size {gib} GiB overflows bytes")))?;
            let base_bytes = virtual_size(qemu_img, base, format)?;
            if bytes < base_bytes {
                return Err(VmmError::InvalidSpec(format!(
                    "disk {} of {gib} GiB ({bytes} bytes) would be smaller than its base image {} ({base_bytes} bytes); \
                     the disk must be at least as large as the image",
                    overlay.display(),
                    base.display()
                )));
            }
            Some(bytes.to_string())
        }
    };
    let mut partial = overlay.as_os_str().to_owned();
    partial.push(".creating");
    let partial = PathBuf::from(partial);
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-b".as_ref(),
        base.as_os_str(),
        "-F".as_ref(),
        format.as_ref(),
        partial.as_os_str(),
    ];
    if let Some(size) = &size {
        args.push(size.as_ref());
    }
    let what = format!("qemu-img create over {}", base.display());
    if let Err(e) = run_qemu_img(qemu_img, &args, overlay, &what) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, overlay).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        VmmError::io(overlay, e)
    })
}

/// Creates every missing overlay of `disks` (a disk with a base whose file
/// does not exist yet). Existing files are left alone: on a relaunch they are
/// the tenant's disk. `qemu_img` is needed only when something is missing.
pub fn create_missing_overlays(qemu_img: Option<&Path>, disks: &[Disk]) -> Result<(), VmmError> {
    for disk in disks {
        let Some(base) = &disk.base else { continue };
        if disk.path.exists() {
            continue;
        }
        let qemu_img = qemu_img.ok_or_else(|| {
            VmmError::InvalidSpec(format!(
                "overlay {} is missing and no qemu-img was found to create it",
                disk.path.display()
            ))
        })?;
        create_overlay(qemu_img, base, &disk.path, disk.size_gib)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img() -> Option<PathBuf> {
        let found = find_on_path("qemu-img");
        if found.is_none() {
            eprintln!("SKIPPED: qemu-img is not installed (apt-get install qemu-utils)");
        }
        found
    }

    fn info(qemu_img: &Path, image: &Path) -> serde_json::Value {
        let out = Command::new(qemu_img).args(["info", "--output=json", "-f", "qcow2"]).arg(image).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn an_overlay_has_the_requested_virtual_size_and_names_its_base_format() {
        let Some(qemu_img) = qemu_img() else { return };
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let overlay = dir.path().join("vm.qcow2");
        create_overlay(&qemu_img, &base, &overlay, Some(3)).unwrap();
        let i = info(&qemu_img, &overlay);
        assert_eq!(i["virtual-size"], 3 * GIB, "{i}");
        assert_eq!(i["backing-filename-format"], "raw");
        assert_eq!(i["format"], "qcow2");
        assert!(!dir.path().join("vm.qcow2.creating").exists(), "no temporary left behind");

        // Without a size the overlay takes the base's; over a qcow2 base the
        // format is named as qcow2.
        let second = dir.path().join("vm2.qcow2");
        create_overlay(&qemu_img, &overlay, &second, None).unwrap();
        let i = info(&qemu_img, &second);
        assert_eq!(i["virtual-size"], 3 * GIB);
        assert_eq!(i["backing-filename-format"], "qcow2");
        assert_eq!(virtual_size(&qemu_img, &base, "raw").unwrap(), 1 << 20);
    }

    #[test]
    fn an_overlay_smaller_than_its_base_is_refused() {
        let Some(qemu_img) = qemu_img() else { return };
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let made = Command::new(&qemu_img).args(["create", "-q", "-f", "qcow2"]).arg(&base).arg("2G").status().unwrap();
        assert!(made.success());
        let overlay = dir.path().join("vm.qcow2");
        let err = create_overlay(&qemu_img, &base, &overlay, Some(1)).unwrap_err();
        assert!(matches!(err, VmmError::InvalidSpec(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("smaller than its base") && text.contains(&(2 * GIB).to_string()), "{text}");
        assert!(!overlay.exists());
        // Equal is fine.
        create_overlay(&qemu_img, &base, &overlay, Some(2)).unwrap();
        assert_eq!(info(&qemu_img, &overlay)["virtual-size"], 2 * GIB);
    }

    #[test]
    fn missing_overlays_are_made_and_existing_ones_kept() {
        let Some(qemu_img) = qemu_img() else { return };
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let existing = dir.path().join("kept.qcow2");
        std::fs::write(&existing, b"tenant data").unwrap();
        let disks = [
            Disk { path: dir.path().join("new.qcow2"), base: Some(base.clone()), readonly: false, size_gib: Some(2) },
            Disk { path: existing.clone(), base: Some(base.clone()), readonly: false, size_gib: Some(5) },
            Disk { path: base.clone(), base: None, readonly: true, size_gib: None },
        ];
        create_missing_overlays(Some(&qemu_img), &disks).unwrap();
        assert_eq!(info(&qemu_img, &disks[0].path)["virtual-size"], 2 * GIB);
        assert_eq!(std::fs::read(&existing).unwrap(), b"tenant data");

        let missing = [Disk { path: dir.path().join("other.qcow2"), ..disks[0].clone() }];
        let err = create_missing_overlays(None, &missing).unwrap_err();
        assert!(err.to_string().contains("no qemu-img"), "{err}");
        let err = create_overlay(&qemu_img, &base, &dir.path().join("no/such/dir.qcow2"), None).unwrap_err();
        assert!(err.to_string().contains("qemu-img create"), "{err}");
    }

    #[test]
    fn formats_come_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a");
        std::fs::write(&raw, b"QFI").unwrap();
        assert_eq!(detect_format(&raw).unwrap(), "raw");
        std::fs::write(&raw, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(detect_format(&raw).unwrap(), "qcow2");
        assert!(detect_format(&dir.path().join("missing")).is_err());
    }
}
