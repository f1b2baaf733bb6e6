//! Membership roles and what each may do. The API asks these questions;
//! it never compares role names itself.

use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    ClientViewer,
    Agent,
    Admin,
    Owner,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "OWNER" => Ok(Role::Owner),
            "ADMIN" => Ok(Role::Admin),
            "AGENT" => Ok(Role::Agent),
            "CLIENT_VIEWER" => Ok(Role::ClientViewer),
            other => Err(ParseError::new("role", format!("unknown role {other:?}"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "OWNER",
            Role::Admin => "ADMIN",
            Role::Agent => "AGENT",
            Role::ClientViewer => "CLIENT_VIEWER",
        }
    }

    /// Members, workspaces and the audit log are managed by owners and admins.
    pub fn is_manager(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// Client viewers only read.
    pub fn can_write(self) -> bool {
        self != Role::ClientViewer
    }

    /// Client viewers are always limited to listed workspaces; agents may be.
    pub fn may_be_restricted(self) -> bool {
        matches!(self, Role::Agent | Role::ClientViewer)
    }

    /// Whether a member with `self` may give `target` to someone who now has
    /// `current` (None for a new member). Only owners touch owners.
    pub fn may_assign(self, current: Option<Role>, target: Role) -> bool {
        if !self.is_manager() {
            return false;
        }
        if self == Role::Owner {
            return true;
        }
        target != Role::Owner && current != Some(Role::Owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips() {
        for r in [Role::Owner, Role::Admin, Role::Agent, Role::ClientViewer] {
            assert_eq!(Role::parse(r.as_str()).unwrap(), r);
        }
        assert!(Role::parse("owner").is_err());
    }

    #[test]
    fn only_owners_touch_owners() {
        assert!(Role::Owner.may_assign(Some(Role::Owner), Role::Agent));
        assert!(!Role::Admin.may_assign(Some(Role::Owner), Role::Agent));
        assert!(!Role::Admin.may_assign(None, Role::Owner));
        assert!(Role::Admin.may_assign(Some(Role::Agent), Role::Admin));
        assert!(!Role::Agent.may_assign(None, Role::ClientViewer));
    }
}
