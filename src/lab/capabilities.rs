//! What a host's libvirt says of its machine in its capabilities XML: the
//! CPUs, their model, memory and the host's UUID.

use super::libvirtd::Connection;
use crate::measure::Machine;

/// The host's machine as its libvirt tells: CPUs, their model (from the
/// capabilities, where given), memory and the host's UUID.
pub fn machine(
    conn: &Connection,
    capabilities: Option<&str>,
) -> Result<Machine, virt::error::Error> {
    let node = conn.node_info()?;
    let host = capabilities.and_then(host_section);
    Ok(Machine {
        cpus: node.cpus,
        cpu: match host.and_then(host_cpu_model) {
            Some(model) => format!("{}, {model}", node.model),
            None => node.model,
        },
        memory_mib: node.memory >> 10,
        uuid: capabilities.and_then(host_uuid),
    })
}

/// The `<host>` element of libvirt's capabilities XML: the guests' CPUs
/// come after it.
fn host_section(capabilities: &str) -> Option<&str> {
    let host = &capabilities[capabilities.find("<host>")?..];
    Some(&host[..host.find("</host>")?])
}

/// The text of the first element `name` in `xml`.
fn element<'x>(xml: &'x str, name: &str) -> Option<&'x str> {
    let open = format!("<{name}");
    let body = &xml[xml.find(&open)?..];
    let text = &body[body.find('>')? + 1..];
    Some(text[..text.find('<')?].trim())
}

/// The host CPU's vendor and model from the capabilities' `<host>`
/// (`<cpu>...<model>EPYC-Rome</model><vendor>AMD</vendor>`).
fn host_cpu_model(host: &str) -> Option<String> {
    let cpu = &host[host.find("<cpu>")?..];
    let cpu = &cpu[..cpu.find("</cpu>")?];
    let model = element(cpu, "model")?;
    Some(match element(cpu, "vendor") {
        Some(vendor) => format!("{vendor} {model}"),
        None => model.to_string(),
    })
}

/// The host's UUID from libvirt's capabilities XML (`<host><uuid>`): the
/// machine's SMBIOS UUID, or the daemon's `host_uuid`.
pub fn host_uuid(capabilities: &str) -> Option<String> {
    let uuid = element(host_section(capabilities)?, "uuid")?;
    uuid::Uuid::parse_str(uuid).ok().map(|u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_cpu_is_read_from_the_hosts_cpu_not_a_guests() {
        let caps = "<capabilities>\n  <host>\n    <uuid>4c4c4544-0042-4d10-8031-b4c04f4e3432</uuid>\n    <cpu>\n                          <arch>x86_64</arch>\n      <model>EPYC-Rome</model>\n                          <vendor>AMD</vendor>\n    </cpu>\n    <secmodel>\n                          <model>apparmor</model>\n    </secmodel>\n  </host>\n  <guest>\n                        <cpu><model>qemu64</model></cpu>\n  </guest>\n</capabilities>";
        let host = host_section(caps).unwrap();
        assert_eq!(host_cpu_model(host).as_deref(), Some("AMD EPYC-Rome"));
        assert_eq!(
            element(host, "uuid"),
            Some("4c4c4544-0042-4d10-8031-b4c04f4e3432")
        );
        let no_model = "<capabilities><host><cpu><arch>x86_64</arch></cpu>\
                        <secmodel><model>apparmor</model></secmodel></host></capabilities>";
        let host = host_section(no_model).unwrap();
        assert_eq!(host_cpu_model(host), None);
        assert_eq!(element(host, "uuid"), None);
    }

    #[test]
    fn the_host_uuid_is_the_host_s() {
        let caps = "<capabilities><host>\n<uuid>52A1E2C4-0000-4000-8000-0123456789AB</uuid>\
                    </host><guest><uuid>x</uuid></guest></capabilities>";
        assert_eq!(
            host_uuid(caps).as_deref(),
            Some("52a1e2c4-0000-4000-8000-0123456789ab")
        );
        assert_eq!(
            host_uuid("<capabilities><host><uuid>u</uuid></host></capabilities>"),
            None
        );
    }
}
