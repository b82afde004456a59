//! Which VMM runs a VM, decided per VM.
//!
//! [`choose_backend`] is a pure function of what the VM needs (its
//! [`VmSpec`]), what the configuration asks for (`backend`, `accel`) and what
//! the host has ([`HostCapabilities`]); it returns the backend, the
//! accelerator and the reason, or why no backend can run the VM. [`Backends`]
//! holds the backends linked into this agent; [`Backends::detect`] finds them
//! on the host. A running VM is always driven by the backend its journaled
//! [`dc_vmm::VmHandle`] names, whatever the configuration says later.
//!
//! The rules (SPEC §5): Cloud Hypervisor for regular, SEV-SNP and GPU VMs when
//! KVM is usable; QEMU for TDX (Cloud Hypervisor's TDX build is disabled since
//! v53), for software emulation (TCG) and for user-mode networking (Cloud
//! Hypervisor has no user-mode network stack).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dc_vmm::{Accel, BackendKind, Confidential, Hypervisor, Network, VmSpec};

use crate::config::{AccelPreference, BackendPreference, Config};

/// What the host offers, as far as backend choice is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostCapabilities {
    /// `host_root/dev/kvm` opens read-write.
    pub kvm: bool,
    /// A QEMU backend is linked (qemu-system-x86_64 and qemu-img were found).
    pub qemu: bool,
    /// A Cloud Hypervisor backend is linked (its binary was found).
    pub cloud_hypervisor: bool,
}

/// The decision for one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendChoice {
    pub backend: BackendKind,
    pub accel: Accel,
    /// Why, in words (logged with the launch).
    pub reason: String,
}

/// Why no backend can run a VM (the contract is rejected with this text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no backend can run this VM: {0}")]
pub struct NoBackend(pub String);

/// Decides backend and accelerator for `spec` (its `accel` field is ignored:
/// the accelerator is part of the decision).
pub fn choose_backend(
    spec: &VmSpec,
    backend: BackendPreference,
    accel: AccelPreference,
    host: &HostCapabilities,
) -> Result<BackendChoice, NoBackend> {
    let no = |m: String| Err(NoBackend(m));
    let accel = match accel {
        AccelPreference::Kvm if !host.kvm => {
            return no("accel = \"kvm\" but /dev/kvm cannot be opened".into())
        }
        AccelPreference::Kvm => Accel::Kvm,
        AccelPreference::Tcg => Accel::Tcg,
        AccelPreference::Auto if host.kvm => Accel::Kvm,
        AccelPreference::Auto => Accel::Tcg,
    };
    let tdx = matches!(spec.confidential, Confidential::Tdx { .. });
    let snp = matches!(spec.confidential, Confidential::SevSnp { .. });
    if spec.confidential != Confidential::None && accel == Accel::Tcg {
        return no("a confidential VM needs KVM; software emulation (TCG) cannot run it".into());
    }
    let user_net = matches!(spec.network, Network::User { .. });
    // Why Cloud Hypervisor cannot run this VM, if it cannot.
    let ch_refusal = if !host.cloud_hypervisor {
        Some("the cloud-hypervisor binary was not found")
    } else if tdx {
        Some("TDX VMs run on QEMU (Cloud Hypervisor's TDX support is disabled since v53)")
    } else if snp {
        // The agent must publish the launch measurement before launching;
        // dc-measure predicts QEMU's kernel-hashes launch, not an IGVM file's.
        Some("SEV-SNP VMs run on QEMU, whose launch measurement (OVMF with kernel hashes) is predicted; Cloud Hypervisor's IGVM launch is not predicted yet")
    } else if accel == Accel::Tcg {
        Some("Cloud Hypervisor needs KVM and this VM uses software emulation (TCG)")
    } else if user_net {
        Some("Cloud Hypervisor has no user-mode networking")
    } else {
        None
    };
    let choice = |backend, reason: String| {
        Ok(BackendChoice {
            backend,
            accel,
            reason,
        })
    };
    match backend {
        BackendPreference::Qemu if host.qemu => {
            choice(BackendKind::Qemu, "backend = \"qemu\"".into())
        }
        BackendPreference::Qemu => {
            no("backend = \"qemu\" but qemu-system-x86_64/qemu-img were not found".into())
        }
        BackendPreference::CloudHypervisor => match ch_refusal {
            None => choice(
                BackendKind::CloudHypervisor,
                "backend = \"cloud-hypervisor\"".into(),
            ),
            Some(why) => no(format!("backend = \"cloud-hypervisor\" but {why}")),
        },
        BackendPreference::Auto => match ch_refusal {
            None => choice(
                BackendKind::CloudHypervisor,
                "auto: Cloud Hypervisor is present and KVM can run this VM".into(),
            ),
            Some(why) if host.qemu => choice(BackendKind::Qemu, format!("auto: QEMU, since {why}")),
            Some(why) => no(format!("QEMU was not found and {why}")),
        },
    }
}

/// The backends linked into this agent, plus whether KVM is usable.
#[derive(Clone, Default)]
pub struct Backends {
    pub qemu: Option<Arc<dyn Hypervisor>>,
    pub cloud_hypervisor: Option<Arc<dyn Hypervisor>>,
    pub kvm: bool,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("qemu", &self.qemu.is_some())
            .field("cloud_hypervisor", &self.cloud_hypervisor.is_some())
            .field("kvm", &self.kvm)
            .finish()
    }
}

impl Backends {
    /// One backend only (tests use a fake), in the slot its `kind()` names.
    pub fn single(hypervisor: Arc<dyn Hypervisor>, kvm: bool) -> Self {
        let mut b = Backends {
            kvm,
            ..Backends::default()
        };
        match hypervisor.kind() {
            BackendKind::Qemu => b.qemu = Some(hypervisor),
            BackendKind::CloudHypervisor => b.cloud_hypervisor = Some(hypervisor),
        }
        b
    }

    /// The backend of `kind`, if linked.
    pub fn get(&self, kind: BackendKind) -> Option<&Arc<dyn Hypervisor>> {
        match kind {
            BackendKind::Qemu => self.qemu.as_ref(),
            BackendKind::CloudHypervisor => self.cloud_hypervisor.as_ref(),
        }
    }

    /// What [`choose_backend`] is told about the host.
    pub fn host(&self) -> HostCapabilities {
        HostCapabilities {
            kvm: self.kvm,
            qemu: self.qemu.is_some(),
            cloud_hypervisor: self.cloud_hypervisor.is_some(),
        }
    }

    /// Finds the backends the configuration allows: QEMU on `PATH`; Cloud
    /// Hypervisor at `cloud_hypervisor_binary` or as `cloud-hypervisor` on
    /// `PATH`; KVM when `host_root/dev/kvm` opens read-write. Every backend
    /// present is linked whatever the preference, so VMs launched earlier by
    /// another backend (before a configuration change) are still adopted and
    /// deleted; the preference only chooses new launches ([`choose_backend`]).
    /// Errors when the configured backend (or, for `auto`, every backend) is
    /// missing.
    pub fn detect(config: &Config) -> Result<Backends, String> {
        let kvm = kvm_usable(&config.host_root);
        let (want_qemu, want_ch) = (true, true);
        let (qemu, qemu_err) = if want_qemu {
            match dc_vmm_qemu::Qemu::detect() {
                Ok(q) => (Some(Arc::new(q) as Arc<dyn Hypervisor>), None),
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            (None, None)
        };
        let ch_binary = if want_ch {
            config
                .cloud_hypervisor_binary
                .clone()
                .or_else(|| find_on_path("cloud-hypervisor"))
        } else {
            None
        };
        let ch_err = match &ch_binary {
            Some(p) if !is_executable(p) => {
                Some(format!("{} is not an executable file", p.display()))
            }
            Some(_) => None,
            None => Some("cloud-hypervisor not found (cloud_hypervisor_binary or PATH)".into()),
        };
        let cloud_hypervisor = match (&ch_binary, &ch_err) {
            (Some(p), None) => {
                Some(Arc::new(dc_vmm_ch::CloudHypervisor::new(p)) as Arc<dyn Hypervisor>)
            }
            _ => None,
        };
        let found = Backends {
            qemu,
            cloud_hypervisor,
            kvm,
        };
        match config.backend {
            BackendPreference::Qemu if found.qemu.is_none() => Err(format!(
                "backend = \"qemu\": {}",
                qemu_err.unwrap_or_default()
            )),
            BackendPreference::CloudHypervisor if found.cloud_hypervisor.is_none() => Err(format!(
                "backend = \"cloud-hypervisor\": {}",
                ch_err.unwrap_or_default()
            )),
            BackendPreference::Auto if found.qemu.is_none() && found.cloud_hypervisor.is_none() => {
                Err(format!(
                    "backend = \"auto\" found no VMM: {}; {}",
                    qemu_err.unwrap_or_default(),
                    ch_err.unwrap_or_default()
                ))
            }
            _ => Ok(found),
        }
    }
}

/// Whether `host_root/dev/kvm` opens read-write (exists is not enough: the
/// agent may lack the permission).
pub fn kvm_usable(host_root: &Path) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(host_root.join("dev/kvm"))
        .is_ok()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|c| is_executable(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dc_vmm::{Boot, PortForward};

    fn spec(network: Network, confidential: Confidential) -> VmSpec {
        VmSpec {
            id: "c1".into(),
            vcpus: 1,
            memory_mib: 512,
            boot: Boot::Kernel {
                kernel: "/k".into(),
                initrd: None,
                cmdline: String::new(),
                firmware: None,
            },
            disks: vec![],
            network,
            vsock_cid: None,
            vfio: vec![],
            confidential,
            accel: Accel::Tcg,
            run_dir: "/d/vms/c1".into(),
        }
    }

    fn tap() -> Network {
        Network::Tap {
            tap: "tap0".into(),
            mac: "52:54:00:00:00:01".into(),
        }
    }

    fn user() -> Network {
        Network::User {
            forwards: vec![PortForward {
                host_addr: "127.0.0.1".parse().unwrap(),
                host_port: 20000,
                guest_port: 80,
            }],
        }
    }

    const ALL: HostCapabilities = HostCapabilities {
        kvm: true,
        qemu: true,
        cloud_hypervisor: true,
    };

    fn pick(
        s: &VmSpec,
        b: BackendPreference,
        a: AccelPreference,
        h: HostCapabilities,
    ) -> Result<(BackendKind, Accel), String> {
        choose_backend(s, b, a, &h)
            .map(|c| (c.backend, c.accel))
            .map_err(|e| e.to_string())
    }

    use AccelPreference as A;
    use BackendPreference as B;

    #[test]
    fn auto_prefers_cloud_hypervisor_with_kvm() {
        let s = spec(tap(), Confidential::None);
        assert_eq!(
            pick(&s, B::Auto, A::Auto, ALL),
            Ok((BackendKind::CloudHypervisor, Accel::Kvm))
        );
        let snp = spec(
            tap(),
            Confidential::SevSnp {
                policy: 0x30000,
                host_data: [0; 32],
            },
        );
        assert_eq!(
            pick(&snp, B::Auto, A::Auto, ALL),
            Ok((BackendKind::Qemu, Accel::Kvm)),
            "SEV-SNP needs a predictable measurement: QEMU"
        );
        let e = pick(&snp, B::CloudHypervisor, A::Auto, ALL).unwrap_err();
        assert!(e.contains("SEV-SNP"), "{e}");
    }

    #[test]
    fn auto_falls_back_to_qemu_with_the_reason() {
        let s = spec(tap(), Confidential::None);
        let no_ch = HostCapabilities {
            cloud_hypervisor: false,
            ..ALL
        };
        assert_eq!(
            pick(&s, B::Auto, A::Auto, no_ch),
            Ok((BackendKind::Qemu, Accel::Kvm))
        );
        let no_kvm = HostCapabilities { kvm: false, ..ALL };
        assert_eq!(
            pick(&s, B::Auto, A::Auto, no_kvm),
            Ok((BackendKind::Qemu, Accel::Tcg))
        );
        let c = choose_backend(&s, B::Auto, A::Tcg, &ALL).unwrap();
        assert_eq!((c.backend, c.accel), (BackendKind::Qemu, Accel::Tcg));
        assert!(c.reason.contains("TCG"), "{}", c.reason);
        let c = choose_backend(&spec(user(), Confidential::None), B::Auto, A::Auto, &ALL).unwrap();
        assert_eq!(c.backend, BackendKind::Qemu);
        assert!(c.reason.contains("user-mode"), "{}", c.reason);
    }

    #[test]
    fn tdx_always_runs_on_qemu() {
        let s = spec(
            tap(),
            Confidential::Tdx {
                mrconfigid: [0; 48],
            },
        );
        let c = choose_backend(&s, B::Auto, A::Auto, &ALL).unwrap();
        assert_eq!((c.backend, c.accel), (BackendKind::Qemu, Accel::Kvm));
        assert!(c.reason.contains("TDX"));
        let e = pick(&s, B::CloudHypervisor, A::Auto, ALL).unwrap_err();
        assert!(e.contains("TDX"), "{e}");
        // Confidential VMs never run emulated.
        let e = pick(&s, B::Auto, A::Tcg, ALL).unwrap_err();
        assert!(e.contains("KVM"), "{e}");
        let no_kvm = HostCapabilities { kvm: false, ..ALL };
        assert!(pick(&s, B::Qemu, A::Auto, no_kvm).is_err());
    }

    #[test]
    fn explicit_choices_are_kept_or_refused_never_swapped() {
        let s = spec(tap(), Confidential::None);
        assert_eq!(
            pick(&s, B::Qemu, A::Auto, ALL),
            Ok((BackendKind::Qemu, Accel::Kvm))
        );
        let no_qemu = HostCapabilities { qemu: false, ..ALL };
        assert!(pick(&s, B::Qemu, A::Auto, no_qemu)
            .unwrap_err()
            .contains("qemu"));
        let no_kvm = HostCapabilities { kvm: false, ..ALL };
        assert!(pick(&s, B::CloudHypervisor, A::Auto, no_kvm)
            .unwrap_err()
            .contains("TCG"));
        assert!(pick(&s, B::Auto, A::Kvm, no_kvm)
            .unwrap_err()
            .contains("kvm"));
        let nothing = HostCapabilities {
            kvm: true,
            qemu: false,
            cloud_hypervisor: false,
        };
        assert!(pick(&s, B::Auto, A::Auto, nothing).is_err());
    }

    #[test]
    fn detection_honours_the_configured_backend() {
        let d = tempfile::tempdir().unwrap();
        let text = format!(
            "data_dir = \"{}\"\nregion = \"r\"\ncountry = \"DE\"\nbackend = \"cloud-hypervisor\"\n\
             cloud_hypervisor_binary = \"{}\"\nhost_root = \"{}\"\n[guest]\nkernel = \"/k\"\nbase_disk = \"/d\"\n",
            d.path().display(),
            d.path().join("missing-ch").display(),
            d.path().display(),
        );
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        let e = Backends::detect(&c).unwrap_err();
        assert!(e.contains("missing-ch"), "{e}");
        let fake_ch = d.path().join("cloud-hypervisor");
        std::fs::write(&fake_ch, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake_ch, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = Config::parse(
            Path::new("t.toml"),
            &text.replace("missing-ch", "cloud-hypervisor"),
        )
        .unwrap();
        let b = Backends::detect(&c).unwrap();
        assert!(b.cloud_hypervisor.is_some());
        // QEMU is linked too when present, to adopt and delete its VMs; the
        // preference still decides new launches.
        assert_eq!(b.qemu.is_some(), dc_vmm_qemu::Qemu::detect().is_ok());
        let user = Network::User { forwards: vec![] };
        let s = spec(user, Confidential::None);
        assert!(
            choose_backend(&s, c.backend, c.accel, &b.host()).is_err(),
            "a cloud-hypervisor preference never launches on QEMU"
        );
        assert!(!b.kvm, "no dev/kvm under this host_root");
    }
}
