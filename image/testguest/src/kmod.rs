//! Finding kernel modules (and their dependencies) in an extracted Debian
//! kernel package, without depmod: dependencies come from each module's
//! `.modinfo` ELF section (`depends=a,b`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Module name as the kernel spells it (`-` becomes `_`).
fn canon(name: &str) -> String {
    name.replace('-', "_")
}

/// Map module name → file, for every `*.ko`, `*.ko.xz`, `*.ko.zst`, `*.ko.gz`
/// under `moddir/kernel`.
pub fn index(moddir: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![moddir.join("kernel")];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for ent in rd {
            let ent = ent.map_err(|e| format!("reading {}: {e}", dir.display()))?;
            let p = ent.path();
            let ft = ent.file_type().map_err(|e| format!("stat {}: {e}", p.display()))?;
            if ft.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                for suffix in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
                    if let Some(stem) = name.strip_suffix(suffix) {
                        out.insert(canon(stem), p.clone());
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Names listed in `modules.builtin` (built into the kernel image).
pub fn builtin(moddir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter_map(|f| f.strip_suffix(".ko"))
        .map(canon)
        .collect()
}

/// The module file's bytes, decompressed (`.ko.xz` / `.ko.zst` / `.ko.gz`
/// through the `xz` / `zstd` / `gzip` binaries).
pub fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| format!("running `{tool} -dc {}` to decompress a kernel module: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{tool} -dc {}` failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The contents of the `.modinfo` section of a little-endian ELF64 module.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    let bad = |what: &str| format!("not a valid x86-64 kernel module: {what}");
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(bad("no little-endian ELF64 header"));
    }
    let shoff = u64_at(elf, 0x28).ok_or_else(|| bad("short header"))? as usize;
    let shentsize = u16_at(elf, 0x3A).ok_or_else(|| bad("short header"))? as usize;
    let shnum = u16_at(elf, 0x3C).ok_or_else(|| bad("short header"))? as usize;
    let shstrndx = u16_at(elf, 0x3E).ok_or_else(|| bad("short header"))? as usize;
    if shentsize < 64 {
        return Err(bad("section header entries too small"));
    }
    let sh = |i: usize| -> Option<(u32, usize, usize)> {
        let base = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(elf, base)?, u64_at(elf, base + 0x18)? as usize, u64_at(elf, base + 0x20)? as usize))
    };
    let (_, stroff, strsize) = sh(shstrndx).ok_or_else(|| bad("section name table out of range"))?;
    let strtab = elf.get(stroff..stroff.saturating_add(strsize)).ok_or_else(|| bad("section name table out of range"))?;
    for i in 0..shnum {
        let (name_off, off, size) = sh(i).ok_or_else(|| bad("section header out of range"))?;
        let name = strtab.get(name_off as usize..).unwrap_or(&[]);
        let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
        if name == b".modinfo" {
            let data = elf.get(off..off.saturating_add(size)).ok_or_else(|| bad(".modinfo out of range"))?;
            return Ok(data
                .split(|&b| b == 0)
                .filter_map(|kv| {
                    let s = std::str::from_utf8(kv).ok()?;
                    let (k, v) = s.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect());
        }
    }
    Err(bad("no .modinfo section"))
}

/// A module to load: its name and decompressed bytes.
pub struct Module {
    pub name: String,
    pub data: Vec<u8>,
}

/// Resolve `roots` and everything they depend on into load order
/// (dependencies first). Roots built into the kernel are skipped.
pub fn resolve(moddir: &Path, roots: &[&str]) -> Result<Vec<Module>, String> {
    let idx = index(moddir)?;
    let builtin = builtin(moddir);
    let mut order: Vec<Module> = Vec::new();
    fn visit(
        name: &str,
        idx: &BTreeMap<String, PathBuf>,
        builtin: &[String],
        order: &mut Vec<Module>,
        stack: &mut Vec<String>,
    ) -> Result<(), String> {
        let name = canon(name);
        if order.iter().any(|m| m.name == name) || builtin.contains(&name) {
            return Ok(());
        }
        if stack.contains(&name) {
            return Err(format!("kernel module dependency cycle: {} -> {name}", stack.join(" -> ")));
        }
        let path = idx
            .get(&name)
            .ok_or_else(|| format!("kernel module {name:?} is neither built in nor present in the kernel package"))?;
        let data = read_module(path)?;
        let info = modinfo(&data).map_err(|e| format!("{}: {e}", path.display()))?;
        stack.push(name.clone());
        for (k, v) in &info {
            if k == "depends" {
                for dep in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                    visit(dep, idx, builtin, order, stack)?;
                }
            }
        }
        stack.pop();
        order.push(Module { name, data });
        Ok(())
    }
    let mut stack = Vec::new();
    for r in roots {
        visit(r, &idx, &builtin, &mut order, &mut stack)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_rejects_garbage() {
        assert!(modinfo(b"not elf").unwrap_err().contains("not a valid"));
        let mut fake = b"\x7fELF\x02\x01".to_vec();
        fake.resize(64, 0);
        assert!(modinfo(&fake).is_err());
    }
}
