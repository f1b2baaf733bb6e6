//! Replies that are never canned: templates are scaffolds with slots the
//! agent must write, and a guard refuses replies that repeat the brand's
//! earlier ones or use its banned phrases.

pub mod guard;
pub mod length;
pub mod publish;
pub mod settings;
pub mod template;
