//! Authentication: password hashing, access tokens (JWT), refresh-token
//! sessions, and turning a bearer token into a [`viewer::Viewer`].

pub mod password;
pub mod sessions;
pub mod tokens;
pub mod viewer;
