//! The pinned package list (`packages.lock`).
//!
//! One package a line: `<role> <package> <exact version> <sha256 of the .deb>`,
//! separated by whitespace. `#` starts a comment; blank lines are ignored.
//! Each role (`kernel`, `busybox`) must appear exactly once.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Kernel,
    Busybox,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Kernel, Role::Busybox];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Kernel => "kernel",
            Role::Busybox => "busybox",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub role: Role,
    pub package: String,
    pub version: String,
    /// Lower-case hex SHA-256 of the .deb file.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// Sorted by role.
    pub pins: Vec<Pin>,
}

impl Lock {
    #[cfg(test)]
    pub fn get(&self, role: Role) -> Option<&Pin> {
        self.pins.iter().find(|p| p.role == role)
    }

    pub fn parse(text: &str) -> Result<Lock, String> {
        let mut pins: Vec<Pin> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, package, version, sha] = fields[..] else {
                return Err(format!(
                    "packages.lock line {lineno}: expected 4 fields `<role> <package> <version> <sha256>`, found {}: {raw:?}",
                    fields.len()
                ));
            };
            let role = Role::parse(role).ok_or_else(|| {
                format!("packages.lock line {lineno}: unknown role {role:?} (expected one of: kernel, busybox)")
            })?;
            if !package
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-'))
            {
                return Err(format!("packages.lock line {lineno}: {package:?} is not a valid Debian package name"));
            }
            if !version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'~' | b':'))
                || !version.bytes().next().is_some_and(|b| b.is_ascii_digit())
            {
                return Err(format!("packages.lock line {lineno}: {version:?} is not a valid Debian version"));
            }
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "packages.lock line {lineno}: sha256 {sha:?} must be 64 hex digits (got {} characters)",
                    sha.len()
                ));
            }
            if pins.iter().any(|p| p.role == role) {
                return Err(format!("packages.lock line {lineno}: role {role} listed twice"));
            }
            pins.push(Pin {
                role,
                package: package.to_string(),
                version: version.to_string(),
                sha256: sha.to_ascii_lowercase(),
            });
        }
        for role in Role::ALL {
            if !pins.iter().any(|p| p.role == role) {
                return Err(format!("packages.lock: no `{role}` line"));
            }
        }
        pins.sort_by_key(|p| p.role);
        Ok(Lock { pins })
    }

    /// The file text, with a header comment. `parse(render(l)) == l`.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# dc-test-guest pinned packages (Debian bookworm, amd64).\n\
             # Format: <role> <package> <exact version> <sha256 of the .deb>\n\
             # Roles: kernel (a versioned linux-image-*-cloud-amd64), busybox (busybox-static).\n\
             # Refresh with: DC_UPDATE_LOCK=1 cargo test -p dc-test-guest\n",
        );
        for p in &self.pins {
            s.push_str(&format!("{} {} {} {}\n", p.role, p.package, p.version, p.sha256));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "1cc5f8ddd400cd87c8b524d8b985fffa47e5a5f87284d2125f8420f582d6b93e";

    fn good() -> String {
        format!("# c\n\nbusybox busybox-static 1:1.35.0-4+deb12u1+b1 {SHA}\nkernel linux-image-6.1.0-48-cloud-amd64 6.1.172-1 {SHA} # trailing\n")
    }

    #[test]
    fn parses_good_file_and_round_trips() {
        let l = Lock::parse(&good()).unwrap();
        assert_eq!(l.pins.len(), 2);
        let k = l.get(Role::Kernel).unwrap();
        assert_eq!(k.package, "linux-image-6.1.0-48-cloud-amd64");
        assert_eq!(k.version, "6.1.172-1");
        assert_eq!(k.sha256, SHA);
        assert_eq!(l.get(Role::Busybox).unwrap().version, "1:1.35.0-4+deb12u1+b1");
        assert_eq!(Lock::parse(&l.render()).unwrap(), l);
    }

    #[test]
    fn committed_lock_parses() {
        let l = Lock::parse(crate::LOCK_TEXT).unwrap();
        assert!(l.get(Role::Kernel).unwrap().package.starts_with("linux-image-"));
        assert_eq!(l.get(Role::Busybox).unwrap().package, "busybox-static");
    }

    fn err(text: &str) -> String {
        Lock::parse(text).unwrap_err()
    }

    #[test]
    fn malformed_lines_give_clear_errors() {
        let e = err(&format!("kernel linux-image-x 6.1 {SHA} extra\nbusybox b 1 {SHA}\n"));
        assert!(e.contains("line 1") && e.contains("expected 4 fields") && e.contains("found 5"), "{e}");
        let e = err("kernel linux-image-x 6.1\n");
        assert!(e.contains("line 1") && e.contains("found 3"), "{e}");
        let e = err(&format!("initrd foo 1 {SHA}\n"));
        assert!(e.contains("unknown role \"initrd\""), "{e}");
        let e = err(&format!("kernel Linux_Image 1 {SHA}\n"));
        assert!(e.contains("not a valid Debian package name"), "{e}");
        let e = err(&format!("kernel linux 1.0/2 {SHA}\n"));
        assert!(e.contains("not a valid Debian version"), "{e}");
        let e = err("kernel linux 1.0 abc\n");
        assert!(e.contains("must be 64 hex digits") && e.contains("got 3"), "{e}");
        let e = err(&format!("kernel linux 1.0 {}\n", "g".repeat(64)));
        assert!(e.contains("must be 64 hex digits"), "{e}");
        let e = err(&format!("\nkernel a 1 {SHA}\nkernel b 2 {SHA}\n"));
        assert!(e.contains("line 3") && e.contains("listed twice"), "{e}");
        let e = err(&format!("kernel a 1 {SHA}\n"));
        assert!(e.contains("no `busybox` line"), "{e}");
        let e = err("");
        assert!(e.contains("no `kernel` line"), "{e}");
    }
}
