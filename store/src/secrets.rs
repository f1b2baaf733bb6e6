//! Channel secrets, sealed at rest: opened for a signature check, and
//! compared between channels (one Meta app or X environment signs the
//! deliveries of all its pages or users with one secret).

use rapport_domain::crypto::{SecretBox, same_secret};

/// A channel's secret in clear; None when none is stored, it cannot be
/// decrypted or it is empty (never a key to verify against).
pub fn opened(secrets: &SecretBox, sealed: Option<&[u8]>) -> Option<Vec<u8>> {
    sealed.and_then(|s| match secrets.open(s) {
        Ok(p) => Some(p).filter(|p| !p.is_empty()),
        Err(e) => {
            tracing::error!(error = %e, "a channel secret cannot be opened (RAPPORT_SECRET_KEY changed?)");
            None
        }
    })
}

/// Whether two channels' opened secrets are the same one (in constant
/// time). A channel without a usable secret shares none.
pub fn same(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if same_secret(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_two_usable_equal_secrets_are_the_same() {
        let sb = SecretBox::from_base64(&SecretBox::generate_base64()).unwrap();
        let s1 = Some(sb.seal(b"app-secret-1"));
        let s1_again = Some(sb.seal(b"app-secret-1"));
        let s2 = Some(sb.seal(b"app-secret-2"));
        let empty = Some(sb.seal(b""));
        let garbled = Some(vec![1, 2, 3]);
        let o = |s: &Option<Vec<u8>>| opened(&sb, s.as_deref());
        assert!(same(o(&s1).as_deref(), o(&s1_again).as_deref()));
        assert!(!same(o(&s1).as_deref(), o(&s2).as_deref()));
        for unusable in [&None, &empty, &garbled] {
            assert_eq!(o(unusable), None);
            assert!(!same(o(&s1).as_deref(), o(unusable).as_deref()));
            assert!(!same(o(unusable).as_deref(), o(unusable).as_deref()));
        }
    }
}
