//! sea-orm entities. Tables the current features touch have an entity here;
//! the rest of the data model exists in the migrations and gains entities
//! with the features that use them.

pub mod agency;
pub mod audit_entry;
pub mod author;
pub mod business_calendar;
pub mod channel;
pub mod conversation;
pub mod membership;
pub mod membership_workspace;
pub mod message;
pub mod raw_event;
pub mod reply_refusal;
pub mod reply_template;
pub mod report_share_link;
pub mod session;
pub mod sla_event;
pub mod sla_policy;
pub mod team;
pub mod team_member;
pub mod user;
pub mod webhook_delivery;
pub mod webhook_subscription;
pub mod workspace;
