//! Pure domain logic shared by the API and the worker. No HTTP, SQL or Redis here:
//! every type is built through a `parse` that can fail, and trusted afterwards.

pub mod calendar;
pub mod channel;
pub mod client_ip;
pub mod crypto;
pub mod error;
pub mod ids;
pub mod ingest;
pub mod net;
pub mod page;
pub mod priority;
pub mod reply;
pub mod report;
pub mod retry;
pub mod role;
pub mod sentiment;
pub mod sla;
pub mod text;
pub mod timezone;

pub use error::ParseError;
pub use ids::{GlobalId, Kind};
pub use page::{Cursor, PageRequest, ScoreCursor, TimeCursor};
pub use role::Role;
pub use text::{Email, Name, Password, PhraseList};
pub use timezone::TimeZone;
