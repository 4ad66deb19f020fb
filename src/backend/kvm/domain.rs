//! libvirt domain XML of the workload guest: emulated devices for kvm-fv
//! (e1000 NIC, IDE disk), virtio for kvm-pv.

use super::accel::Accel;
use crate::case::{Case, Hypervisor};
use crate::guest::identity::GuestIdentity;

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
        Hypervisor::KvmPv => DeviceModel {
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
            file.display()
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
    <cmdline>console=ttyS0 panic=-1 loglevel=4 {agent_args}</cmdline>
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
        name = guest.name,
        uuid = guest.uuid,
        metadata = guest.metadata_xml(),
        mac = guest.mac,
        dtype = accel.domain_type(),
        mem = case.guest.memory_mib,
        vcpus = case.guest.vcpus,
        kernel = files.kernel,
        initrd = files.initrd,
        disk = files.disk,
        bridge = at.bridge,
        disk_dev = dev.disk_dev,
        disk_bus = dev.disk_bus,
        nic = dev.nic,
        mtu = case.link.mtu,
    )
}
