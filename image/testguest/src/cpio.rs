//! A minimal, deterministic writer for the "newc" cpio format (the format the
//! Linux kernel unpacks as an initramfs).
//!
//! Determinism: entries are sorted by path, inode numbers are assigned in that
//! order, every mtime is 0 and every owner is uid/gid 0. The same entries
//! always give the same bytes.

use std::collections::BTreeMap;

/// What one archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory with the given permission bits (e.g. 0o755).
    Dir { perm: u32 },
    /// A regular file with the given permission bits and contents.
    File { perm: u32, data: Vec<u8> },
    /// A symbolic link pointing at `target`.
    Symlink { target: String },
    /// A character device node.
    CharDev { perm: u32, major: u32, minor: u32 },
}

/// One archive entry. `path` is relative (no leading `/`), e.g. `bin/busybox`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
}

pub const MAGIC: &[u8; 6] = b"070701";
pub const TRAILER: &str = "TRAILER!!!";
#[cfg(test)]
pub const HEADER_LEN: usize = 110;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("cpio: empty entry path".into());
    }
    if path.starts_with('/') || path.ends_with('/') {
        return Err(format!("cpio: path {path:?} must be relative without a trailing '/'"));
    }
    if path.contains('\0') {
        return Err(format!("cpio: path {path:?} contains a NUL byte"));
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("cpio: path {path:?} has an empty, '.' or '..' component"));
    }
    if path == TRAILER {
        return Err(format!("cpio: path {path:?} is reserved for the trailer"));
    }
    Ok(())
}

fn hex8(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(format!("{v:08X}").as_bytes());
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[allow(clippy::too_many_arguments)]
fn write_one(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), name: &str, data: &[u8]) -> Result<(), String> {
    let filesize = u32::try_from(data.len()).map_err(|_| format!("cpio: {name:?} is larger than 4 GiB"))?;
    let namesize = u32::try_from(name.len() + 1).map_err(|_| format!("cpio: name {name:?} too long"))?;
    out.extend_from_slice(MAGIC);
    hex8(out, ino);
    hex8(out, mode);
    hex8(out, 0); // uid
    hex8(out, 0); // gid
    hex8(out, nlink);
    hex8(out, 0); // mtime
    hex8(out, filesize);
    hex8(out, 0); // devmajor
    hex8(out, 0); // devminor
    hex8(out, rdev.0);
    hex8(out, rdev.1);
    hex8(out, namesize);
    hex8(out, 0); // check (unused in newc)
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
    Ok(())
}

/// Write `entries` as a newc archive (with trailer). Entries are sorted by
/// path; duplicate or malformed paths are an error. Parent directories are
/// not created implicitly: list them.
pub fn write_newc(entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut sorted: BTreeMap<&str, &Kind> = BTreeMap::new();
    for e in entries {
        check_path(&e.path)?;
        if sorted.insert(e.path.as_str(), &e.kind).is_some() {
            return Err(format!("cpio: duplicate entry {:?}", e.path));
        }
    }
    let mut out = Vec::new();
    for (i, (path, kind)) in sorted.iter().enumerate() {
        let ino = u32::try_from(i + 1).map_err(|_| "cpio: too many entries".to_string())?;
        match kind {
            Kind::Dir { perm } => write_one(&mut out, ino, S_IFDIR | (perm & 0o7777), 2, (0, 0), path, &[])?,
            Kind::File { perm, data } => write_one(&mut out, ino, S_IFREG | (perm & 0o7777), 1, (0, 0), path, data)?,
            Kind::Symlink { target } => {
                if target.is_empty() {
                    return Err(format!("cpio: symlink {path:?} has an empty target"));
                }
                write_one(&mut out, ino, S_IFLNK | 0o777, 1, (0, 0), path, target.as_bytes())?
            }
            Kind::CharDev { perm, major, minor } => {
                write_one(&mut out, ino, S_IFCHR | (perm & 0o7777), 1, (*major, *minor), path, &[])?
            }
        }
    }
    write_one(&mut out, 0, 0, 1, (0, 0), TRAILER, &[])?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod parse {
    //! A strict reader used by the tests to check what the writer produced.

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Parsed {
        pub ino: u32,
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub nlink: u32,
        pub mtime: u32,
        pub devmajor: u32,
        pub devminor: u32,
        pub rdevmajor: u32,
        pub rdevminor: u32,
        pub check: u32,
        pub name: String,
        pub data: Vec<u8>,
        /// Offset of the header in the archive.
        pub offset: usize,
    }

    fn field(buf: &[u8], at: usize) -> Result<u32, String> {
        let s = std::str::from_utf8(buf.get(at..at + 8).ok_or("short header")?).map_err(|e| e.to_string())?;
        if !s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()) {
            return Err(format!("field {s:?} is not upper-case hex"));
        }
        u32::from_str_radix(s, 16).map_err(|e| e.to_string())
    }

    /// Parse the archive up to and including the trailer (which is returned
    /// as the last element). Fails on bad magic, misalignment or trailing bytes.
    pub fn parse_newc(buf: &[u8]) -> Result<Vec<Parsed>, String> {
        let mut pos = 0;
        let mut out = Vec::new();
        loop {
            if pos % 4 != 0 {
                return Err(format!("header at {pos} not 4-aligned"));
            }
            let h = buf.get(pos..pos + super::HEADER_LEN).ok_or(format!("truncated header at {pos}"))?;
            if &h[..6] != super::MAGIC {
                return Err(format!("bad magic at {pos}"));
            }
            let f = |i: usize| field(h, 6 + 8 * i);
            let namesize = f(11)? as usize;
            let filesize = f(6)? as usize;
            let name_start = pos + super::HEADER_LEN;
            let name_bytes = buf.get(name_start..name_start + namesize).ok_or("truncated name")?;
            if name_bytes.last() != Some(&0) {
                return Err("name not NUL-terminated".into());
            }
            let name = String::from_utf8(name_bytes[..namesize - 1].to_vec()).map_err(|e| e.to_string())?;
            let mut data_start = name_start + namesize;
            let name_pad = (4 - data_start % 4) % 4;
            if buf.get(data_start..data_start + name_pad).ok_or("truncated pad")?.iter().any(|&b| b != 0) {
                return Err("non-zero name padding".into());
            }
            data_start += name_pad;
            let data = buf.get(data_start..data_start + filesize).ok_or("truncated data")?.to_vec();
            let mut next = data_start + filesize;
            let data_pad = (4 - next % 4) % 4;
            if buf.get(next..next + data_pad).ok_or("truncated data pad")?.iter().any(|&b| b != 0) {
                return Err("non-zero data padding".into());
            }
            next += data_pad;
            let p = Parsed {
                ino: f(0)?,
                mode: f(1)?,
                uid: f(2)?,
                gid: f(3)?,
                nlink: f(4)?,
                mtime: f(5)?,
                devmajor: f(7)?,
                devminor: f(8)?,
                rdevmajor: f(9)?,
                rdevminor: f(10)?,
                check: f(12)?,
                name,
                data,
                offset: pos,
            };
            let is_trailer = p.name == super::TRAILER;
            out.push(p);
            pos = next;
            if is_trailer {
                break;
            }
        }
        if pos != buf.len() {
            return Err(format!("{} trailing bytes after the trailer", buf.len() - pos));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::parse::parse_newc;
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry { path: "init".into(), kind: Kind::File { perm: 0o755, data: b"#!/bin/sh\necho hi\n".to_vec() } },
            Entry { path: "bin/sh".into(), kind: Kind::Symlink { target: "busybox".into() } },
            Entry { path: "bin".into(), kind: Kind::Dir { perm: 0o755 } },
            Entry { path: "bin/busybox".into(), kind: Kind::File { perm: 0o755, data: vec![0xAB; 1001] } },
            Entry { path: "dev".into(), kind: Kind::Dir { perm: 0o755 } },
            Entry { path: "dev/console".into(), kind: Kind::CharDev { perm: 0o600, major: 5, minor: 1 } },
            Entry { path: "empty".into(), kind: Kind::File { perm: 0o644, data: vec![] } },
        ]
    }

    #[test]
    fn header_fields_round_trip() {
        let bytes = write_newc(&sample()).unwrap();
        let parsed = parse_newc(&bytes).unwrap();
        let names: Vec<&str> = parsed.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "empty", "init", TRAILER]);
        for (i, p) in parsed.iter().enumerate() {
            assert_eq!((p.uid, p.gid, p.mtime, p.check, p.devmajor, p.devminor), (0, 0, 0, 0, 0, 0), "{}", p.name);
            assert_eq!(p.offset % 4, 0);
            if p.name != TRAILER {
                assert_eq!(p.ino as usize, i + 1);
            }
        }
        let by = |n: &str| parsed.iter().find(|p| p.name == n).unwrap().clone();
        assert_eq!(by("bin").mode, 0o040755);
        assert_eq!(by("bin").nlink, 2);
        assert_eq!(by("bin/busybox").mode, 0o100755);
        assert_eq!(by("bin/busybox").data, vec![0xAB; 1001]);
        assert_eq!(by("bin/sh").mode, 0o120777);
        assert_eq!(by("bin/sh").data, b"busybox");
        let con = by("dev/console");
        assert_eq!((con.mode, con.rdevmajor, con.rdevminor, con.data.len()), (0o020600, 5, 1, 0));
        assert_eq!(by("empty").data, b"");
        assert_eq!(by("init").data, b"#!/bin/sh\necho hi\n");
        let t = by(TRAILER);
        assert_eq!((t.mode, t.ino, t.data.len()), (0, 0, 0));
    }

    #[test]
    fn alignment_and_trailer() {
        // Names of every length mod 4 and data of every length mod 4.
        let mut entries = Vec::new();
        for n in 1..=8 {
            entries.push(Entry { path: "f".repeat(n), kind: Kind::File { perm: 0o644, data: vec![7; n] } });
        }
        let bytes = write_newc(&entries).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(&bytes[..6] == MAGIC);
        let parsed = parse_newc(&bytes).unwrap();
        assert_eq!(parsed.len(), 9);
        assert_eq!(parsed.last().unwrap().name, TRAILER);
        for p in &parsed[..8] {
            assert_eq!(p.data, vec![7; p.name.len()]);
        }
        // Empty archive is just the trailer.
        let only = parse_newc(&write_newc(&[]).unwrap()).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].name, TRAILER);
    }

    #[test]
    fn deterministic_regardless_of_input_order() {
        let a = write_newc(&sample()).unwrap();
        let mut rev = sample();
        rev.reverse();
        let b = write_newc(&rev).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, write_newc(&sample()).unwrap());
        let mut changed = sample();
        changed[0].kind = Kind::File { perm: 0o755, data: b"#!/bin/sh\necho ho\n".to_vec() };
        assert_ne!(a, write_newc(&changed).unwrap());
    }

    #[test]
    fn rejects_bad_paths_and_duplicates() {
        for bad in ["", "/abs", "dir/", "a//b", "a/../b", "./a", "TRAILER!!!", "nul\0"] {
            let e = Entry { path: bad.into(), kind: Kind::Dir { perm: 0o755 } };
            assert!(write_newc(&[e]).is_err(), "{bad:?} accepted");
        }
        let e = Entry { path: "x".into(), kind: Kind::Dir { perm: 0o755 } };
        let err = write_newc(&[e.clone(), e]).unwrap_err();
        assert!(err.contains("duplicate"), "{err}");
        let l = Entry { path: "l".into(), kind: Kind::Symlink { target: String::new() } };
        assert!(write_newc(&[l]).is_err());
    }
}
