//! libvirt domain XML of the workload guest: emulated devices for kvm-fv
//! (e1000 NIC, IDE disk), virtio for kvm-pv.

use super::accel::Accel;
use crate::case::{Case, Hypervisor};
use crate::lab::identity::GuestIdentity;
use crate::markup::escape;

pub struct DeviceModel {
    pub nic: &'static str,
    pub disk_bus: &'static str,
    pub disk_dev: &'static str,
    /// PCI drivers the agent must find bound to its NIC and disk.
    pub guest_nic_driver: &'static str,
    pub guest_disk_driver: &'static str,
}

pub fn device_model(h: Hypervisor) -> DeviceModel {
    match h {
        super::KVM_PV => DeviceModel {
            nic: "virtio",
            disk_bus: "virtio",
            disk_dev: "vda",
            guest_nic_driver: "virtio-pci",
            guest_disk_driver: "virtio-pci",
        },
        _ => DeviceModel {
            nic: "e1000",
            disk_bus: "ide",
            disk_dev: "hda",
            guest_nic_driver: "e1000",
            guest_disk_driver: "ata_piix",
        },
    }
}

/// The guest's files, as paths on the hosts (volumes of their pools).
pub struct GuestFiles {
    pub kernel: String,
    pub initrd: String,
    pub disk: String,
}

/// Where the guest's NIC and serial console go on its host.
pub struct Attachments<'a> {
    /// The bridge of the guest LAN.
    pub bridge: &'a str,
    /// A file of this machine for the console, where the host is one of
    /// its namespaces; None on a real host, whose console is a pty there.
    pub console: Option<&'a std::path::Path>,
}

pub fn xml(
    guest: &GuestIdentity,
    case: &Case,
    accel: &Accel,
    files: &GuestFiles,
    at: &Attachments,
    agent_args: &str,
) -> String {
    let dev = device_model(case.hypervisor);
    let serial = match at.console {
        Some(file) => format!(
            "<serial type='file'>\n      <source path='{}' append='on'/>\n      <target port='0'/>\n    </serial>",
            escape(&file.display().to_string())
        ),
        None => "<serial type='pty'>\n      <target port='0'/>\n    </serial>".into(),
    };
    format!(
        r#"<domain type='{dtype}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  {metadata}
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 loglevel=4 {cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='{disk}'/>
      <target dev='{disk_dev}' bus='{disk_bus}'/>
    </disk>
    <interface type='bridge'>
      <source bridge='{bridge}'/>
      <mac address='{mac}'/>
      <model type='{nic}'/>
      <mtu size='{mtu}'/>
    </interface>
    {serial}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>"#,
        name = escape(&guest.name),
        uuid = guest.uuid,
        metadata = guest.metadata_xml(),
        mac = guest.mac,
        dtype = accel.domain_type(),
        mem = case.guest.memory_mib,
        vcpus = case.guest.vcpus,
        kernel = escape(&files.kernel),
        initrd = escape(&files.initrd),
        disk = escape(&files.disk),
        bridge = escape(at.bridge),
        cmdline = escape(agent_args),
        disk_dev = dev.disk_dev,
        disk_bus = dev.disk_bus,
        nic = dev.nic,
        mtu = case.link.mtu,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::owner::Owner;

    #[test]
    fn names_and_paths_from_a_lab_cannot_break_out_of_the_xml() {
        let owner = Owner::this().unwrap();
        let guest = GuestIdentity::new(owner);
        let files = GuestFiles {
            kernel: "/pool/k'&<x/>".into(),
            initrd: "/pool/i".into(),
            disk: "/pool/d".into(),
        };
        let at = Attachments {
            bridge: "br0'/><interface type='network",
            console: None,
        };
        let accel = Accel {
            kvm: false,
            description: "tcg".into(),
        };
        let case = crate::report::fixtures::case();
        let text = xml(&guest, &case, &accel, &files, &at, "ip=10.0.0.2 x=<&>");
        assert!(
            text.contains("<kernel>/pool/k&#39;&amp;&lt;x/&gt;</kernel>"),
            "{text}"
        );
        assert!(text.contains("<source bridge='br0&#39;/&gt;&lt;interface type=&#39;network'/>"));
        assert!(text.contains("x=&lt;&amp;&gt;</cmdline>"));
        assert_eq!(text.matches("<interface").count(), 1);
    }
}
