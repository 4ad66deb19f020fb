//! What a real Xen host offers the Xen rows, asked of its dom0 over its
//! `ssh` (`migsuite hosts`): Xen and its toolstack, the tools a case runs
//! there, and the guests' bridge.

use crate::case::Hypervisor;
use crate::inventory;

/// What `command` prints in a Xen host's dom0, run over its `ssh`; the
/// error says "over ssh <destination>: why".
fn in_dom0(host: &inventory::Host, command: &str) -> Result<String, String> {
    let ssh = host
        .ssh
        .as_deref()
        .ok_or("the Xen rows need the host's `ssh`")?;
    let mut args = crate::sh::SSH_OPTIONS.to_vec();
    args.extend(["--", ssh, command]);
    crate::sh::run("ssh", &args).map_err(|e| format!("over ssh {ssh}: {e:#}"))
}

/// What a case runs in a real dom0 besides `xl`, and what for.
const DOM0_TOOLS: [(&str, &str); 2] = [
    (
        "python3",
        "the migration stream's receiver; Debian's xen-utils depends on it",
    ),
    ("pv", "counting the migration stream's bytes"),
];
/// How dom0 names a tool it lacks, after `xl info`.
const MISSING: &str = "@@missing:";

/// The tools of DOM0_TOOLS that dom0 said it lacks, with what for.
fn missing_tools(said: &str) -> Vec<String> {
    said.lines()
        .filter_map(|l| l.trim().strip_prefix(MISSING))
        .filter_map(|t| DOM0_TOOLS.iter().find(|(name, _)| *name == t))
        .map(|(name, why)| format!("`{name}` ({why})"))
        .collect()
}

/// What a real host's Xen is, asked of its dom0 over its `ssh`, where a
/// case drives `xl`, and whether dom0 has the other tools a case runs
/// there; an HVM domU needs Xen's hvm capability.
pub(super) fn xen_on(host: &inventory::Host, backend: Hypervisor) -> Result<String, String> {
    let ask = format!(
        "xl info && for t in {}; do command -v $t >/dev/null || echo {MISSING}$t; done",
        DOM0_TOOLS.map(|(t, _)| t).join(" ")
    );
    let info = in_dom0(host, &ask).map_err(|e| format!("no Xen toolstack answers in dom0 {e}"))?;
    let missing = missing_tools(&info);
    if !missing.is_empty() {
        return Err(format!("dom0 lacks {}", missing.join(", ")));
    }
    let v = super::Versions::from_xl_info(&info, String::new());
    if backend == super::XEN_HVM && !v.caps.contains("hvm") {
        return Err(format!(
            "{} offers no HVM guests here (xen_caps: {}): the CPU needs VT-x or AMD-V, enabled",
            v.xen, v.caps
        ));
    }
    // (There is an `ssh`: dom0 answered over it.)
    let ssh = host.ssh.as_deref().unwrap_or_default();
    Ok(format!("{} (caps {}), xl over ssh {ssh}", v.xen, v.caps))
}

/// Whether a Xen host's dom0 has the bridge, asked over its `ssh`: domUs
/// join it through Xen's vif script, not libvirt, whose node devices need
/// not list it (Debian's libvirt in a dom0 did not).
pub(super) fn bridge_in_dom0(host: &inventory::Host) -> Result<String, String> {
    let name = &host.bridge;
    if name.contains('\'') {
        return Err(format!(
            "`{name}`: a bridge name with a quote is not asked for"
        ));
    }
    let ask = format!("test -d '/sys/class/net/{name}/bridge' && echo present || echo absent");
    let said =
        in_dom0(host, &ask).map_err(|e| format!("cannot ask dom0 for bridge `{name}` {e}"))?;
    if said.trim() == "present" {
        Ok(format!("`{name}` present in dom0"))
    } else {
        Err(format!(
            "no bridge `{name}` in dom0: name the bridge the domUs' vifs join"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dom0_without_the_tools_a_case_runs_says_which_and_why() {
        let said = "host : c\nxen_version : 4.17.5\n@@missing:python3\n@@missing:other\n";
        assert_eq!(
            missing_tools(said),
            ["`python3` (the migration stream's receiver; Debian's xen-utils depends on it)"]
        );
        assert!(missing_tools("host : c\nxen_version : 4.17.5\n").is_empty());
    }
}
