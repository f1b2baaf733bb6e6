//! sea-orm entities. Tables the current features touch have an entity here;
//! the rest of the data model exists in the migrations and gains entities
//! with the features that use them.

pub mod agency;
pub mod audit_entry;
pub mod membership;
pub mod membership_workspace;
pub mod session;
pub mod user;
pub mod workspace;
