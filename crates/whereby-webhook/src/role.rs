//! Participant role names.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The role of a participant in a Whereby room.
///
/// Every role Whereby documents has a variant. A name Whereby adds later is kept in
/// [`RoleName::Other`] instead of failing the whole payload, so a new role never makes
/// a webhook unreadable.
///
/// ```
/// use whereby_webhook::RoleName;
///
/// assert_eq!(RoleName::from("granted_visitor"), RoleName::GrantedVisitor);
/// assert_eq!(RoleName::from("moderator"), RoleName::Other("moderator".into()));
/// assert_eq!(RoleName::Host.as_str(), "host");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoleName {
    /// `owner`
    Owner,
    /// `member`
    Member,
    /// `host`
    Host,
    /// `visitor`
    Visitor,
    /// `granted_visitor`
    GrantedVisitor,
    /// `viewer`
    Viewer,
    /// `granted_viewer`
    GrantedViewer,
    /// `recorder`
    Recorder,
    /// `streamer`
    Streamer,
    /// `captioner`
    Captioner,
    /// `assistant`
    Assistant,
    /// A role name this crate does not know yet, kept as sent.
    Other(String),
}

/// The documented roles with their wire names, in one place so parsing and printing
/// cannot drift apart.
const KNOWN: [(RoleName, &str); 11] = [
    (RoleName::Owner, "owner"),
    (RoleName::Member, "member"),
    (RoleName::Host, "host"),
    (RoleName::Visitor, "visitor"),
    (RoleName::GrantedVisitor, "granted_visitor"),
    (RoleName::Viewer, "viewer"),
    (RoleName::GrantedViewer, "granted_viewer"),
    (RoleName::Recorder, "recorder"),
    (RoleName::Streamer, "streamer"),
    (RoleName::Captioner, "captioner"),
    (RoleName::Assistant, "assistant"),
];

impl RoleName {
    /// The name as Whereby sends it.
    pub fn as_str(&self) -> &str {
        match self {
            RoleName::Other(name) => name,
            known => KNOWN
                .iter()
                .find(|(role, _)| role == known)
                .map(|(_, name)| *name)
                .unwrap_or_default(),
        }
    }

    /// Whether the role is a machine rather than a person: `assistant`,
    /// `recorder`, `streamer` or `captioner`. Every other role, unknown ones
    /// included, counts as human.
    ///
    /// ```
    /// use whereby_webhook::RoleName;
    ///
    /// assert!(RoleName::from("recorder").is_machine());
    /// assert!(!RoleName::from("granted_visitor").is_machine());
    /// ```
    pub fn is_machine(&self) -> bool {
        matches!(
            self,
            RoleName::Assistant | RoleName::Recorder | RoleName::Streamer | RoleName::Captioner
        )
    }

    /// The documented roles' wire names.
    pub fn documented() -> impl Iterator<Item = &'static str> {
        KNOWN.iter().map(|(_, name)| *name)
    }

    /// Whether this is one of the documented roles.
    pub fn is_known(&self) -> bool {
        !matches!(self, RoleName::Other(_))
    }
}

impl From<&str> for RoleName {
    fn from(name: &str) -> Self {
        KNOWN
            .iter()
            .find(|(_, wire)| *wire == name)
            .map(|(role, _)| role.clone())
            .unwrap_or_else(|| RoleName::Other(name.to_owned()))
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RoleName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(RoleVisitor)
    }
}

/// Reads the name from whatever string form the deserializer has, so a known role
/// never costs an allocation.
struct RoleVisitor;

impl serde::de::Visitor<'_> for RoleVisitor {
    type Value = RoleName;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a role name string")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<RoleName, E> {
        Ok(RoleName::from(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_role_round_trips() {
        for (role, wire) in KNOWN {
            assert_eq!(RoleName::from(wire), role);
            assert_eq!(role.as_str(), wire);
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{wire}\""));
            assert_eq!(serde_json::from_str::<RoleName>(&json).unwrap(), role);
        }
    }

    #[test]
    fn unknown_role_is_kept() {
        let role: RoleName = serde_json::from_str("\"superhost\"").unwrap();
        assert_eq!(role, RoleName::Other("superhost".into()));
        assert!(!role.is_known());
        assert_eq!(serde_json::to_string(&role).unwrap(), "\"superhost\"");
    }

    #[test]
    fn escaped_role_name_is_read() {
        let role: RoleName = serde_json::from_str("\"ho\\u0073t\"").unwrap();
        assert_eq!(role, RoleName::Host);
    }
}
