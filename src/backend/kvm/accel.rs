//! KVM where the host can run a stock guest kernel with it, TCG otherwise.

use crate::case::AccelChoice;
use crate::lab::libvirtd::Connection;
use anyhow::{bail, Result};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accel {
    pub kvm: bool,
    /// Shown in every report, e.g. "tcg (auto: /dev/kvm is kvm_pvm, which runs only PVM guest kernels)".
    pub description: String,
}

impl Accel {
    /// libvirt's domain type.
    pub fn domain_type(&self) -> &'static str {
        if self.kvm {
            "kvm"
        } else {
            "qemu"
        }
    }
}

/// Why KVM cannot run a stock Debian guest on this machine, or None if it
/// can.
pub fn kvm_unusable() -> Option<String> {
    if !Path::new("/dev/kvm").exists() {
        return Some("no /dev/kvm".into());
    }
    if Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists() {
        return None;
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Some("/dev/kvm is kvm_pvm, which runs only PVM-enabled guest kernels".into());
    }
    Some("/dev/kvm has neither kvm_intel nor kvm_amd loaded".into())
}

/// Whether libvirt's `capabilities` (XML) offer KVM guests.
pub fn offers_kvm(capabilities: &str) -> bool {
    capabilities.contains("<domain type='kvm'")
}

/// On this machine (a simulated lab's hosts are its namespaces).
pub fn choose(choice: AccelChoice) -> Result<Accel> {
    choose_given(choice, kvm_unusable())
}

/// On real hosts: KVM where every one of them offers it (the guest
/// migrates between them), as their daemons tell.
pub fn choose_on(choice: AccelChoice, hosts: &[Connection]) -> Result<Accel> {
    let mut unusable = None;
    for conn in hosts {
        let caps = conn.capabilities()?;
        if !offers_kvm(&caps) {
            let uri = conn.uri().unwrap_or_default();
            unusable = Some(format!("libvirt at {uri} offers no KVM"));
        }
    }
    choose_given(choice, unusable)
}

fn choose_given(choice: AccelChoice, unusable: Option<String>) -> Result<Accel> {
    Ok(match (choice, unusable) {
        (AccelChoice::Tcg, _) => Accel {
            kvm: false,
            description: "tcg (forced by the suite)".into(),
        },
        (AccelChoice::Kvm, None) => Accel {
            kvm: true,
            description: "kvm (forced by the suite)".into(),
        },
        (AccelChoice::Kvm, Some(why)) => {
            bail!("the suite forces accel: kvm, but KVM cannot run guests here: {why}")
        }
        (AccelChoice::Auto, None) => Accel {
            kvm: true,
            description: "kvm (auto)".into(),
        },
        (AccelChoice::Auto, Some(why)) => Accel {
            kvm: false,
            description: format!("tcg (auto: {why})"),
        },
    })
}
