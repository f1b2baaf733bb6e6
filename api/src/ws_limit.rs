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
//!
//! The subscription library stops its actor without a close frame when its
//! input ends with an error, so the client would see a dropped connection
//! (1006) with no reason. [`ClosingBody`] wraps the response and sends the
//! close frame the protocol names for the cut (graphql-transport-ws: 4408
//! when no `connection_init` came in time, 4403 for one without a valid
//! token; RFC 6455: 1009 for a message too big, 1000 for a session the
//! client ended) unless the library has sent one already.

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
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
    /// A close frame has passed.
    closed: bool,
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
            self.closed |= opcode == 8;
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

/// Why the server closes a socket, with the close frame's code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Closing {
    /// No `connection_init` before the sign-in deadline.
    InitTimeout = 4408,
    /// A `connection_init` came, but no valid token before the deadline.
    Forbidden = 4403,
    /// A client message over the size limit.
    TooBig = 1009,
    /// The client ended its session (`connection_terminate`).
    Ended = 1000,
}

impl Closing {
    const ALL: [Closing; 4] = [
        Closing::InitTimeout,
        Closing::Forbidden,
        Closing::TooBig,
        Closing::Ended,
    ];

    fn reason(self) -> &'static str {
        match self {
            Closing::InitTimeout => "Connection initialisation timeout",
            Closing::Forbidden => "Forbidden: no valid token in connection_init in time",
            Closing::TooBig => "Message too big",
            Closing::Ended => "Session ended",
        }
    }

    /// The server's (unmasked) close frame.
    fn frame(self) -> Bytes {
        let reason = self.reason().as_bytes();
        let mut f = vec![0x88, (2 + reason.len()) as u8];
        f.extend_from_slice(&(self as u16).to_be_bytes());
        f.extend_from_slice(reason);
        Bytes::from(f)
    }
}

/// A socket's session as the GraphQL layer sees it, told to the byte
/// streams: whether it sent `connection_init`, signed in, or is over (the
/// client's `connection_terminate` ends the session but not the
/// connection, which would stay open, uncounted, for as long as the client
/// answers pings); and why the server cut it, once it has.
#[derive(Default)]
pub struct SocketLife {
    init_seen: AtomicBool,
    signed_in: AtomicBool,
    ended: AtomicBool,
    /// The [`Closing`] code once cut, 0 before.
    closing: AtomicU16,
    waker: futures_util::task::AtomicWaker,
}

impl SocketLife {
    /// A `connection_init` arrived (valid or not).
    pub fn init_seen(&self) {
        self.init_seen.store(true, Ordering::Release);
    }

    pub fn sign_in(&self) {
        self.signed_in.store(true, Ordering::Release);
    }

    /// The session is over: the connection is closed.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn closing(&self) -> Option<Closing> {
        let code = self.closing.load(Ordering::Acquire);
        Closing::ALL.into_iter().find(|c| *c as u16 == code)
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

    fn cut(&mut self, why: Closing) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.cut = true;
        self.life.closing.store(why as u16, Ordering::Release);
        Poll::Ready(Some(Err(match why {
            Closing::TooBig => PayloadError::Overflow,
            _ => PayloadError::Io(std::io::Error::other(why.reason())),
        })))
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
            return self.cut(Closing::Ended);
        }
        if self.life.signed_in.load(Ordering::Acquire) {
            self.sign_in_by = None;
        } else if let Some(by) = self.sign_in_by.as_mut()
            && by.as_mut().poll(cx).is_ready()
        {
            tracing::info!("a WebSocket did not sign in within its deadline; closing");
            let why = if self.life.init_seen.load(Ordering::Acquire) {
                Closing::Forbidden
            } else {
                Closing::InitTimeout
            };
            return self.cut(why);
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled {
            let max = self.max;
            if self.frames.feed(bytes, max).is_err() {
                tracing::warn!(max, "a WebSocket message over the size limit; closing");
                return self.cut(Closing::TooBig);
            }
        }
        polled
    }
}

/// A WebSocket response's body (the server's frames), ended with the close
/// frame of the server's cut when the library has not sent one.
pub struct ClosingBody {
    inner: BoxBody,
    life: Arc<SocketLife>,
    sent: Frames,
    done: bool,
}

impl ClosingBody {
    pub fn new(inner: BoxBody, life: Arc<SocketLife>) -> Self {
        Self {
            inner,
            life,
            sent: Frames::default(),
            done: false,
        }
    }
}

impl MessageBody for ClosingBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match polled {
            Poll::Ready(Some(Ok(bytes))) => {
                // Server frames are whole and never over the cap here.
                let _ = self.sent.feed(&bytes, u64::MAX);
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) | Poll::Pending => {
                // The cut happens while the library's actor reads its
                // input, which this poll drives: checked after it.
                if let Some(why) = self.life.closing()
                    && !self.sent.closed
                {
                    self.done = true;
                    return Poll::Ready(Some(Ok(why.frame())));
                }
                if polled.is_ready() {
                    self.done = true;
                }
                polled
            }
        }
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

    fn cut_life(why: Closing) -> Arc<SocketLife> {
        let life = SocketLife::default();
        life.closing.store(why as u16, Ordering::Release);
        Arc::new(life)
    }

    #[tokio::test]
    async fn a_cut_socket_ends_with_its_close_frame_sent_once() {
        // The library ended without a close frame: the cut's is added.
        let body = ClosingBody::new(
            BoxBody::new(Bytes::from_static(b"\x81\x02hi")),
            cut_life(Closing::InitTimeout),
        );
        let got = actix_web::body::to_bytes(body).await.unwrap();
        let mut want = b"\x81\x02hi\x88\x23\x11\x38".to_vec();
        want.extend_from_slice(b"Connection initialisation timeout");
        assert_eq!(&got[..], &want[..]);
        // The library sent its own close frame (1002): no second one.
        let own = Bytes::from_static(b"\x88\x02\x03\xea");
        let body = ClosingBody::new(BoxBody::new(own.clone()), cut_life(Closing::Forbidden));
        assert_eq!(actix_web::body::to_bytes(body).await.unwrap(), own);
        // Not cut: the body passes as it is.
        let body = ClosingBody::new(BoxBody::new(own.clone()), Arc::default());
        assert_eq!(actix_web::body::to_bytes(body).await.unwrap(), own);
    }
}
