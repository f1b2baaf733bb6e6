//! A cap on the size of each message a WebSocket client sends. The
//! subscription handler joins a fragmented message's frames with no limit,
//! before any authentication, so a client could send continuation frames
//! without end and fill the server's memory. The raw stream is read here,
//! frame header by frame header (RFC 6455 §5.2), and ends with an error as
//! soon as one message's payload passes the cap; the bytes themselves pass
//! through untouched.
//!
//! A socket must also sign in (a `connection_init` with a valid token)
//! within a deadline, or it is closed: without one, anyone could hold
//! sockets open for good by answering pings, each costing a connection and
//! its actor, and every operation on it would be refused anyway.

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// Follows frame boundaries in the bytes a client sends.
#[derive(Debug, Default)]
struct Frames {
    /// The header being read (at most 14 bytes).
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// Payload so far of the data message being received in fragments.
    message: u64,
}

/// Why a stream was cut.
#[derive(Debug, PartialEq)]
struct TooLarge;

impl Frames {
    /// Reads `data`; fails once a message passes `max` bytes of payload.
    fn feed(&mut self, mut data: &[u8], max: u64) -> Result<(), TooLarge> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len() as u64);
                self.payload_left -= n;
                data = &data[n as usize..];
                continue;
            }
            self.header.push(data[0]);
            data = &data[1..];
            let Some(len) = header_len(&self.header) else {
                continue;
            };
            if self.header.len() < len {
                continue;
            }
            let (fin, opcode, payload) = parse(&self.header);
            self.header.clear();
            self.payload_left = payload;
            // Control frames (close, ping, pong) may come between fragments
            // and are at most 125 bytes (the codec checks).
            if opcode >= 8 {
                continue;
            }
            let so_far = if opcode == 0 { self.message } else { 0 };
            let total = so_far.saturating_add(payload);
            if total > max {
                return Err(TooLarge);
            }
            self.message = if fin { 0 } else { total };
        }
        Ok(())
    }
}

/// The full length of a header whose first bytes are `h`, once known.
fn header_len(h: &[u8]) -> Option<usize> {
    let second = *h.get(1)?;
    let masked = if second & 0x80 != 0 { 4 } else { 0 };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    Some(2 + extended + masked)
}

/// FIN, opcode and payload length of a complete header.
fn parse(h: &[u8]) -> (bool, u8, u64) {
    let fin = h[0] & 0x80 != 0;
    let opcode = h[0] & 0x0f;
    let payload = match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
        n => u64::from(n),
    };
    (fin, opcode, payload)
}

/// A socket's session as the GraphQL layer sees it, told to the byte
/// stream: signed in, or over (the client's `connection_terminate` ends the
/// session but not the connection, which would stay open, uncounted, for as
/// long as the client answers pings).
#[derive(Default)]
pub struct SocketLife {
    signed_in: AtomicBool,
    ended: AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl SocketLife {
    pub fn sign_in(&self) {
        self.signed_in.store(true, Ordering::Release);
    }

    /// The session is over: the connection is closed.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// `inner` (a WebSocket request's payload), ended with an error when the
/// client sends a message over `max` bytes, when it has not signed in
/// within the sign-in deadline, or when its session ends.
pub struct MessageLimit<S> {
    inner: S,
    frames: Frames,
    max: u64,
    cut: bool,
    life: Arc<SocketLife>,
    /// None once signed in.
    sign_in_by: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> MessageLimit<S> {
    pub fn new(inner: S, max: usize, sign_in_within: Duration, life: Arc<SocketLife>) -> Self {
        Self {
            inner,
            frames: Frames::default(),
            max: max as u64,
            cut: false,
            life,
            sign_in_by: Some(Box::pin(tokio::time::sleep(sign_in_within))),
        }
    }

    fn cut(&mut self, why: &'static str) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.cut = true;
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::other(why)))))
    }
}

impl<S> Stream for MessageLimit<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.cut {
            return Poll::Ready(None);
        }
        self.life.waker.register(cx.waker());
        if self.life.ended.load(Ordering::Acquire) {
            tracing::debug!("a WebSocket's session ended; closing");
            return self.cut("the session ended");
        }
        if self.life.signed_in.load(Ordering::Acquire) {
            self.sign_in_by = None;
        } else if let Some(by) = self.sign_in_by.as_mut()
            && by.as_mut().poll(cx).is_ready()
        {
            tracing::info!("a WebSocket did not sign in within its deadline; closing");
            return self.cut("no connection_init with a valid token in time");
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled {
            let max = self.max;
            if self.frames.feed(bytes, max).is_err() {
                self.cut = true;
                tracing::warn!(max, "a WebSocket message over the size limit; closing");
                return Poll::Ready(Some(Err(PayloadError::Overflow)));
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame (masked, as clients must send them).
    fn frame(fin: bool, opcode: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload {
            0..=125 => f.push(0x80 | payload as u8),
            126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', payload));
        f
    }

    #[test]
    fn whole_messages_under_the_cap_pass_in_any_chunking() {
        let mut bytes = frame(true, 1, 100);
        bytes.extend(frame(true, 9, 4)); // ping
        bytes.extend(frame(false, 1, 300));
        bytes.extend(frame(true, 10, 0)); // pong between fragments
        bytes.extend(frame(true, 0, 300));
        bytes.extend(frame(true, 1, 70_000));
        for chunk in [1, 3, 7, 4096, bytes.len()] {
            let mut f = Frames::default();
            for c in bytes.chunks(chunk) {
                assert_eq!(f.feed(c, 70_000), Ok(()), "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn a_message_over_the_cap_is_cut_even_in_fragments() {
        let mut f = Frames::default();
        assert_eq!(f.feed(&frame(true, 1, 1001), 1000), Err(TooLarge));
        // Fragments: each small, together too large.
        let mut f = Frames::default();
        assert_eq!(f.feed(&frame(false, 1, 600), 1000), Ok(()));
        assert_eq!(f.feed(&frame(false, 0, 300), 1000), Ok(()));
        assert_eq!(f.feed(&frame(false, 0, 200), 1000), Err(TooLarge));
        // A finished message starts the count again.
        let mut f = Frames::default();
        assert_eq!(f.feed(&frame(false, 1, 600), 1000), Ok(()));
        assert_eq!(f.feed(&frame(true, 0, 300), 1000), Ok(()));
        assert_eq!(f.feed(&frame(true, 1, 900), 1000), Ok(()));
        // A 64-bit length is read whole.
        let mut f = Frames::default();
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(f.feed(&huge, 1000), Ok(()), "the header is not done yet");
        assert_eq!(f.feed(&[1, 2, 3, 4], 1000), Err(TooLarge));
    }
}
