//! Who a guest is on its host: a UUID of its own, the name and MAC made
//! from it, and the runner that made it, written into the guest's libvirt
//! metadata. A real host's daemon outlives runs and carries other people's
//! guests: a guest is found by its UUID, never by a name someone else may
//! use, and what a killed run left is told from anything else by its
//! metadata (`lab::leftovers`).

use super::owner::Owner;
use uuid::Uuid;

/// The namespace of migsuite's element in a domain's `<metadata>`.
pub const METADATA_URI: &str = "http://migsuite.invalid/xmlns/guest/1";
const METADATA_PREFIX: &str = "migsuite";

#[derive(Clone, Debug, PartialEq)]
pub struct GuestIdentity {
    pub uuid: Uuid,
    /// The study's name for the migrated VM and the UUID's first digits:
    /// `x0-1a2b3c4d`.
    pub name: String,
    /// In QEMU's range (52:54:00), its last three bytes the UUID's: two
    /// guests on one LAN never share one.
    pub mac: String,
    pub owner: Owner,
}

impl GuestIdentity {
    pub fn new(owner: &Owner) -> GuestIdentity {
        GuestIdentity::with_uuid(Uuid::new_v4(), owner)
    }

    fn with_uuid(uuid: Uuid, owner: &Owner) -> GuestIdentity {
        let b = uuid.as_bytes();
        GuestIdentity {
            name: format!("x0-{}", &uuid.simple().to_string()[..8]),
            mac: format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]),
            uuid,
            owner: owner.clone(),
        }
    }

    /// The `<metadata>` element of the guest's domain XML.
    pub fn metadata_xml(&self) -> String {
        format!(
            "<metadata><{METADATA_PREFIX}:guest xmlns:{METADATA_PREFIX}='{METADATA_URI}' \
             owner='{}'/></metadata>",
            self.owner
        )
    }
}

/// The runner that made a guest, from its metadata element as libvirt
/// returns it (`<guest owner="..."/>`); None if it names none.
pub fn owner_in_metadata(element: &str) -> Option<Owner> {
    let at = element.find("owner=")? + "owner=".len();
    let quote = element[at..].chars().next()?;
    let value = &element[at + 1..];
    Owner::parse(&value[..value.find(quote)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_mac_come_from_the_uuid() {
        let owner = Owner::this().unwrap();
        let uuid = Uuid::parse_str("1a2b3c4d-0000-4000-8000-000000000000").unwrap();
        let g = GuestIdentity::with_uuid(uuid, owner);
        assert_eq!(g.name, "x0-1a2b3c4d");
        assert_eq!(g.mac, "52:54:00:1a:2b:3c");
        assert_ne!(GuestIdentity::new(owner).mac, GuestIdentity::new(owner).mac);
    }

    #[test]
    fn the_owner_reads_back_from_the_metadata() {
        let owner = Owner::this().unwrap();
        let g = GuestIdentity::new(owner);
        assert_eq!(owner_in_metadata(&g.metadata_xml()).as_ref(), Some(owner));
        // As libvirt gives the element back.
        let given = format!("<guest xmlns=\"{METADATA_URI}\" owner=\"{owner}\"/>");
        assert_eq!(owner_in_metadata(&given).as_ref(), Some(owner));
        assert_eq!(owner_in_metadata("<guest/>"), None);
        assert_eq!(owner_in_metadata("<guest owner='nobody'/>"), None);
    }
}
