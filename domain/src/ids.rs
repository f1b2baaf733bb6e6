//! Global opaque IDs: `base64url("<Kind>:<uuid>")`. Clients treat them as
//! opaque strings; decoding checks the kind, so an ID of one type never
//! resolves as another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agency,
    User,
    Member,
    Workspace,
    AuditEntry,
    Channel,
    Conversation,
    Message,
    Author,
    DeadLetter,
    SlaPolicy,
    BusinessCalendar,
    SlaEvent,
    WebhookSubscription,
    ReplyTemplate,
    Team,
    ReportShareLink,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agency => "Agency",
            Kind::User => "User",
            Kind::Member => "Member",
            Kind::Workspace => "Workspace",
            Kind::AuditEntry => "AuditEntry",
            Kind::Channel => "Channel",
            Kind::Conversation => "Conversation",
            Kind::Message => "Message",
            Kind::Author => "Author",
            Kind::DeadLetter => "DeadLetter",
            Kind::SlaPolicy => "SlaPolicy",
            Kind::BusinessCalendar => "BusinessCalendar",
            Kind::SlaEvent => "SlaEvent",
            Kind::WebhookSubscription => "WebhookSubscription",
            Kind::ReplyTemplate => "ReplyTemplate",
            Kind::Team => "Team",
            Kind::ReportShareLink => "ReportShareLink",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalId {
    pub kind: Kind,
    pub id: Uuid,
}

impl GlobalId {
    pub fn new(kind: Kind, id: Uuid) -> Self {
        Self { kind, id }
    }

    pub fn encode(kind: Kind, id: Uuid) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", kind.as_str(), id))
    }

    /// Decodes an ID that must be of `kind`. Anything else (garbage, another
    /// kind) is `None`: the caller answers NOT_FOUND, exactly as for a
    /// well-formed ID that does not exist.
    pub fn decode(kind: Kind, raw: &str) -> Option<Uuid> {
        if raw.len() > 128 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (prefix, uuid) = text.split_once(':')?;
        if prefix != kind.as_str() {
            return None;
        }
        Uuid::parse_str(uuid).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_kind() {
        let id = Uuid::now_v7();
        let raw = GlobalId::encode(Kind::Workspace, id);
        assert_eq!(GlobalId::decode(Kind::Workspace, &raw), Some(id));
        assert_eq!(GlobalId::decode(Kind::Member, &raw), None);
        assert_eq!(GlobalId::decode(Kind::Workspace, "not-an-id"), None);
        assert_eq!(GlobalId::decode(Kind::Workspace, ""), None);
    }
}
